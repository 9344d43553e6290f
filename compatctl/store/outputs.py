"""Output paths: checked before any work, written by one run at a time, with per-run scratch.

Every command that writes calls :func:`claim_outputs` first, with its output paths, their
kinds and its input paths. Before anything expensive runs it refuses (BadInputError, one line
naming the path and the fix):

- a name too long for the file system, a file where a folder is expected or the reverse, a
  file name without an allowed suffix (``--plot x.gif``), a parent that is a file, a place
  this process cannot create files in;
- an output that is one of the inputs (same path, symlink or hard link), lies inside an input
  folder, or is a folder holding an input;
- an existing file of another kind (a model where a transform goes, an embeddings file where
  a JSON report, plot, plan or summary goes) or a transform of another lineage, unless ``force``;
- an output another run is writing: each output has an advisory ``flock`` on a hidden lock
  file next to it (``.NAME.lock``), held until the claim is released. ``--part I/N`` workers
  share that lock and each holds its own ``.NAME.part-I-of-N.lock``, so N workers can fill
  one set while a second copy of any worker is refused. The refusal names the holder's pid.
  The last run to release an output removes its lock files, including those a killed run left
  (a leftover lock file is harmless meanwhile: a lock is the flock, not the file's existence).

Scratch space next to an output is per run (:func:`scratch_folder`); :func:`remove_stale_scratch`
removes what a killed run left and says so. This module imports only the standard library
(and the store's header reader when an existing file has to be identified).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from compatctl.errors import BadInputError, IntegrityError

PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp", ".eps", ".ps", ".tif", ".tiff")
# Room kept under the file system's name limit for the hidden names derived from an output's
# name: ".NAME.XXXXXXXX.tmp", ".NAME.part-I-of-N.lock", ".NAME.scratch-part-I-of-N.pid-PID.host-HHHHHHHH".
RESERVED_NAME_BYTES = 64
_EMBEDDING_SET_FILES = ("manifest.json", "progress.part-*.json")
_TRAINING_RUN = ("model.safetensors", "train_state.safetensors")   # a folder train-new wrote
_TRAINING_ALSO = ("config.json", "metrics.jsonl")                    # also written (replaced) by train-new
_DEMO_MARKER = ".compatctl-demo"
_COMPARE_FILES = {"report.json", "report.md", "strategies.png", "forward.safetensors", "query.safetensors"}


@dataclasses.dataclass(frozen=True)
class OutputKind:
    """What a command writes at an output path."""

    what: str                        # for messages: "an embedding-set folder"
    folder: bool                     # a folder (True) or one file
    suffixes: tuple[str, ...] = ()   # allowed file-name suffixes (files only; empty = any)


OUTPUT_KINDS = {
    "embeddings": OutputKind("an embedding-set folder", folder=True),
    "training": OutputKind("a train-new output folder", folder=True),
    "demo": OutputKind("a demo folder", folder=True),
    "compare": OutputKind("a compare output folder", folder=True),
    "transform": OutputKind("a transform file", folder=False, suffixes=(".safetensors",)),
    "report": OutputKind("a JSON report", folder=False, suffixes=(".json",)),
    "plot": OutputKind("an image", folder=False, suffixes=PLOT_SUFFIXES),
    "plan": OutputKind("a plan file", folder=False, suffixes=(".csv", ".jsonl", ".ndjson", ".json")),
    "per_query": OutputKind("a per-query JSONL file", folder=False, suffixes=(".jsonl",)),
    "summary": OutputKind("a Markdown summary", folder=False),  # any name: $GITHUB_STEP_SUMMARY has no suffix
    # compatctl export: never replaces anything (store/export.py refuses an existing OUT first)
    "export_file": OutputKind("an exported Parquet file or faiss index", folder=False,
                              suffixes=(".parquet", ".faiss", ".index")),
    "export_folder": OutputKind("an exported folder (.npy shards or an embedding set)", folder=True),
}


@dataclasses.dataclass(frozen=True)
class Output:
    """One output of a command: its path, kind (a key of OUTPUT_KINDS), option name and --part."""

    path: Path
    kind: str
    option: str = "--out"
    part: tuple[int, int] = (1, 1)

    @property
    def label(self) -> str:
        return f"{self.option} {self.path}"


# ---------------------------------------------------------------- path checks (before any work)

def _name_limits(folder: Path) -> tuple[int, int]:
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError):
        return 255, 4096


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` that exists (``path``'s own parent first)."""
    folder = path.absolute().parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    return folder


def _check_name(output: Output, ancestor: Path) -> None:
    name_max, path_max = _name_limits(ancestor if ancestor.is_dir() else Path("/"))
    absolute = output.path.absolute()
    new_parts = absolute.relative_to(ancestor).parts
    for index, part in enumerate(new_parts):
        room = name_max - (RESERVED_NAME_BYTES if index == len(new_parts) - 1 else 0)
        if len(part.encode()) > room:
            raise BadInputError(f"{output.option} {part[:40]}...: this name is {len(part.encode())} bytes; "
                                f"the file system allows {room} here (compatctl adds up to "
                                f"{RESERVED_NAME_BYTES} for its temporary names); choose a shorter name")
    if len(str(absolute).encode()) + RESERVED_NAME_BYTES > path_max:
        raise BadInputError(f"{output.option} {str(absolute)[:60]}...: the path is too long for the file "
                            f"system ({path_max} bytes at most); choose a shorter path")


def _check_type(output: Output) -> None:
    kind, path = OUTPUT_KINDS[output.kind], output.path
    if kind.folder and path.exists() and not path.is_dir():
        raise BadInputError(f"{output.label}: is a file, not a directory; this names {kind.what}; "
                            f"choose another {output.option} (a new or empty folder)")
    if not kind.folder and path.is_dir():
        raise BadInputError(f"{output.label}: is a folder, but this names {kind.what}; "
                            f"give a file name, e.g. {output.option} {path / ('out' + (kind.suffixes or ('',))[0])}")
    if kind.suffixes and path.suffix.lower() not in kind.suffixes:
        raise BadInputError(f"{output.label}: {kind.what} must end in {', '.join(kind.suffixes)}; "
                            f"choose a name such as {output.option} {path.with_suffix(kind.suffixes[0])}")


def _check_writable(output: Output, ancestor: Path) -> None:
    if not ancestor.is_dir():
        raise BadInputError(f"{output.label}: {ancestor} is a file, not a folder, so nothing can be "
                            f"created below it; choose another {output.option}")
    where = output.path if output.path.is_dir() else ancestor
    try:  # a real probe: os.access says yes to root on read-only file systems and in /proc
        fd, probe = tempfile.mkstemp(prefix=".compatctl-probe-", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BadInputError(f"{output.label}: cannot create files in {where} ({exc.strerror}); "
                            f"choose a writable location for {output.option}") from None


def _inside(path: Path, folder: Path) -> bool:
    return path != folder and folder in path.parents


def _check_not_input(output: Output, inputs: list[Path]) -> None:
    """An output never replaces, lies inside, or is a folder around one of the command's inputs."""
    target = output.path.resolve()
    for given in inputs:
        source = given.resolve()
        same = source == target or (target.exists() and os.path.samefile(source, target))
        if same:
            raise BadInputError(f"{output.label}: is also an input of this command ({given}); writing it "
                                f"would destroy that input; choose another {output.option}")
        if source.is_dir() and _inside(target, source):
            raise BadInputError(f"{output.label}: lies inside the input folder {given}; outputs never go "
                                f"inside inputs; choose another {output.option}")
        if OUTPUT_KINDS[output.kind].folder and _inside(source, target):
            raise BadInputError(f"{output.label}: holds the input {given}, which this command could "
                                f"overwrite; choose another {output.option} or move the input out")


def check_output_path(output: Output, inputs: Iterable[Path | str | None] = ()) -> None:
    """Check one output path before any work (see the module doc); raise BadInputError if unusable."""
    if output.kind not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {output.kind!r}")
    ancestor = _existing_ancestor(output.path)
    _check_name(output, ancestor)
    _check_not_input(output, [Path(p) for p in inputs if p is not None and os.path.exists(p)])
    _check_type(output)
    _check_writable(output, ancestor)


# ---------------------------------------------------------------- what an existing output holds

def _folder_holds(path: Path) -> str | None:
    """"embeddings", "training", "demo", "other" or None (missing or empty) for an existing folder."""
    if not path.is_dir():
        return None
    names = [p.name for p in path.iterdir() if not (p.name.startswith(".") and p.name.endswith(".tmp"))]
    if not names:
        return None
    if any(next(path.glob(pattern), None) for pattern in _EMBEDDING_SET_FILES):
        return "embeddings"
    if _DEMO_MARKER in names:
        return "demo"
    if any(name in _TRAINING_RUN for name in names):
        return "training"
    if set(names) <= _COMPARE_FILES:  # what compare writes (also what a killed compare left)
        return "compare"
    return "other"


_FOLDER_WORDS = {"embeddings": "an embedding set", "training": "a train-new run (model.safetensors)",
                 "demo": "an earlier `compatctl demo`", "other": "files compatctl did not write",
                 "compare": "an earlier `compatctl compare`"}


def _check_folder_contents(output: Output) -> None:
    holds = _folder_holds(output.path)
    if holds is None or holds == output.kind:
        return  # new, empty, or the same kind (the command itself checks that it may continue it)
    if output.kind == "training" and holds == "other":
        clash = sorted(name for name in _TRAINING_ALSO if (output.path / name).exists())
        if not clash:
            return  # a plain folder: train-new adds its files
        raise BadInputError(f"{output.label}: holds {', '.join(clash)} that train-new would replace; "
                            f"choose another {output.option} (a new or empty folder)")
    raise BadInputError(f"{output.label}: holds {_FOLDER_WORDS[holds]}, not {OUTPUT_KINDS[output.kind].what}; "
                        f"choose another {output.option} (a new or empty folder), or delete it first")


_HOLDS = {"model": "a model checkpoint", "embeddings": "an embeddings file", None: "a safetensors file compatctl "
          "did not write"}


def _check_artifact(output: Output, lineage: dict) -> None:
    """An existing transform file may be replaced only by a transform of the same lineage."""
    from compatctl.store.artifacts import read_header

    try:
        header = read_header(output.path)
        found = header.get("kind")
    except BadInputError:
        header, found = {}, "unreadable"
    if found != "transform":
        holds = _HOLDS.get(found, "no readable safetensors data" if found == "unreadable" else f"a {found}")
        raise BadInputError(f"{output.label}: already exists and holds {holds}, not a transform; choose another "
                            f"{output.option}, or pass --force to replace it")
    for key, expected in lineage.items():
        if expected is not None and header.get(key) not in (None, expected):
            raise BadInputError(f"{output.label}: holds a transform fitted on other embeddings ({key} "
                                f"{header[key]}, this run {expected}); choose another {output.option}, "
                                "or pass --force to replace it")


def _check_report(output: Output) -> None:
    with open(output.path, "rb") as handle:
        start = handle.read(256).lstrip()
    if start and not start.startswith(b"{"):
        raise BadInputError(f"{output.label}: already exists and is not a JSON report; choose another "
                            f"{output.option}, or delete it first")


def _check_not_data(output: Output) -> None:
    """A plot, plan, per-query or summary output never replaces a safetensors or .npz file (a model,
    transform or embeddings): ``--summary-md`` takes any name, and the others' suffixes are no proof."""
    with open(output.path, "rb") as handle:
        start = handle.read(9)
    holds = None
    if start.startswith(b"PK\x03\x04"):
        holds = "a .npz (zip) archive"
    elif len(start) == 9 and start[8:9] == b"{" and int.from_bytes(start[:8], "little") < output.path.stat().st_size:
        holds = "a safetensors file (a model, transform or embeddings)"
    if holds:
        raise BadInputError(f"{output.label}: already exists and holds {holds}, not {OUTPUT_KINDS[output.kind].what}; "
                            f"choose another {output.option}, or delete it first")


def check_output_contents(output: Output, *, force: bool = False, lineage: dict | None = None) -> None:
    """Refuse an existing output of another kind (or, for a transform, another lineage) unless ``force``."""
    kind = OUTPUT_KINDS[output.kind]
    if kind.folder:
        _check_folder_contents(output)
    elif output.path.is_file() and not force:
        if output.kind == "transform":
            _check_artifact(output, lineage or {})
        elif output.kind == "report":
            _check_report(output)
        else:
            _check_not_data(output)


# ---------------------------------------------------------------- one writer per output

def lock_file(path: Path, part: tuple[int, int] | None = None) -> Path:
    """The hidden lock file next to output ``path`` (per worker when ``part`` is given)."""
    path = Path(path)
    tail = f".part-{part[0]}-of-{part[1]}" if part else ""
    return path.parent / f".{path.name}{tail}.lock"


def _holders(output: Output) -> str:
    """"pid 123" (or "pids 1, 2") of the runs holding the output's locks, as their lock files say."""
    pids = set()
    files = [lock_file(output.path), *output.path.parent.glob(f".{glob_escape(output.path.name)}.part-*.lock")]
    for file in files:
        with contextlib.suppress(OSError, ValueError, IndexError):  # empty: shared by --part workers
            pids.add(int(file.read_text().split()[0]))
    pids = {pid for pid in pids if _alive(pid)}  # a killed worker's part lock file may still name it
    if not pids:
        return "another compatctl run"
    return f"another compatctl run (pid{'s' if len(pids) > 1 else ''} {', '.join(map(str, sorted(pids)))})"


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _same_file(fd: int, path: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samestat(os.fstat(fd), os.stat(path))
    return False


def _lock(output: Output, file: Path, shared: bool) -> int:
    """Open ``file`` and flock it without waiting; BadInputError naming the holder when taken."""
    for _ in range(10):
        fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)  # mode honours the umask
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BadInputError(f"{output.label}: {_holders(output)} is writing it; wait for that run to "
                                f"finish (or stop it), or choose another {output.option}") from None
        if _same_file(fd, file):  # else a releasing holder unlinked it between our open and flock
            if not shared:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise BadInputError(f"{output.label}: could not take its lock {file}; re-run the command")


def _remove_dead_part_locks(output: Path) -> None:
    """Remove the ``.NAME.part-*.lock`` files of ``--part`` workers that were killed (SIGKILL skips
    their release). Called only under the exclusive main lock, which no live worker can coexist with
    (a worker holds the shared main lock for as long as its part lock); the flock test is a second
    guard."""
    for file in output.parent.glob(f".{glob_escape(output.name)}.part-*.lock"):
        with contextlib.suppress(OSError):
            fd = os.open(file, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _same_file(fd, file):
                    file.unlink()
            finally:
                os.close(fd)


def _unlock(fd: int, file: Path, shared: bool, output: Path | None = None) -> None:
    """Drop a lock; the last holder removes the lock file (others see it gone and re-open).

    For an output's main lock (``output`` given) the last holder also removes part locks that killed
    workers left, so a killed run's lock files last only until the next run on that output ends.
    """
    with contextlib.suppress(OSError):
        if shared:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while other workers hold it
        if _same_file(fd, file):
            if output is not None:
                _remove_dead_part_locks(output)
            file.unlink()
    os.close(fd)


class Claim:
    """The locks of a command's outputs; release them with :meth:`release` or a ``with`` block."""

    def __init__(self) -> None:
        self._held: list[tuple[int, Path, bool, Path | None]] = []  # (fd, lock file, shared, output if main)

    def take(self, output: Output) -> None:
        workers = output.part[1] > 1
        self._held.append((_lock(output, lock_file(output.path), shared=workers),
                           lock_file(output.path), workers, output.path))
        if workers:
            file = lock_file(output.path, output.part)
            self._held.append((_lock(output, file, shared=False), file, False, None))

    def release(self) -> None:
        while self._held:
            _unlock(*self._held.pop())

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_scope: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar("outputs_scope", default=None)


@contextlib.contextmanager
def command_scope() -> Iterator[None]:
    """Claims made inside (by :func:`claim_outputs`) are released when the scope ends.

    The CLI runs every command inside one, so a command body claims its outputs in one line
    and holds the locks for the command's life.
    """
    with contextlib.ExitStack() as stack:
        token = _scope.set(stack)
        try:
            yield
        finally:
            _scope.reset(token)


def _is_secondary_rank() -> bool:
    """A torchrun worker other than rank 0: the rank-0 process holds the locks for all of them."""
    return os.environ.get("RANK", "0") != "0"


def claim_outputs(outputs: Iterable[Output], *, inputs: Iterable[Path | str | None] = (), force: bool = False,
                  lineage: dict | None = None) -> Claim:
    """Check every output path, lock each output, then check what existing outputs hold.

    Args:
        outputs: the command's outputs (None entries and outputs without a path are skipped).
        inputs: every path the command reads (None and missing paths are skipped).
        force: replace an existing file of another kind or lineage.
        lineage: header values an existing transform output must match (e.g. old_fingerprint).
    Returns a Claim holding the locks: released at the end of the enclosing :func:`command_scope`,
    or by the caller (``with claim_outputs(...):``) when there is none.
    Raises BadInputError for the first unusable output (nothing is locked then).
    """
    wanted = [o for o in outputs if o is not None and o.path is not None]
    inputs = list(inputs)
    for output in wanted:
        check_output_path(output, inputs)
    claim = Claim()
    try:
        for output in wanted:
            output.path.absolute().parent.mkdir(parents=True, exist_ok=True)
            if not _is_secondary_rank():
                claim.take(output)
            check_output_contents(output, force=force, lineage=lineage)
    except BaseException:
        claim.release()
        raise
    stack = _scope.get()
    if stack is not None:
        stack.callback(claim.release)
    return claim


# ---------------------------------------------------------------- per-run scratch

_SCRATCH_PID = re.compile(r"\.pid-(\d+)(?:\.host-([0-9a-f]{8}))?$")


def _host_tag() -> str:
    """8 hex digits naming this machine: workers on other hosts (``--engine ray``, Slurm) share ``--out``'s
    folder, and a pid says nothing about a process on another host."""
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def scratch_folder(out: Path, label: str) -> Path:
    """A path for this run's scratch folder next to ``out`` (same disk): ``.NAME.scratch-LABEL.pid-PID.host-H``.

    Not created here; the caller removes it when done (:func:`remove_stale_scratch` removes it
    after a kill).
    """
    out = Path(out)
    scratch = out.parent / f".{out.name}.scratch-{label}.pid-{os.getpid()}.host-{_host_tag()}"
    shutil.rmtree(scratch, ignore_errors=True)
    return scratch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def remove_stale_scratch(out: Path) -> list[str]:
    """Remove scratch folders next to ``out`` whose run has ended (killed); one note per folder removed."""
    out = Path(out)
    notes = []
    for scratch in out.parent.glob(f".{glob_escape(out.name)}.scratch-*"):
        match = _SCRATCH_PID.search(scratch.name)
        if match and match.group(2) not in (None, _host_tag()):
            continue  # another host's run: only that host can tell whether it still works
        if match and _alive(int(match.group(1))):
            continue  # a run still working (one per --part may run at once)
        megabytes = _size(scratch) / 1e6 if scratch.is_dir() else 0.0
        shutil.rmtree(scratch, ignore_errors=True) if scratch.is_dir() else scratch.unlink(missing_ok=True)
        notes.append(f"removed {scratch.name} ({megabytes:,.1f} MB), scratch space left by a stopped run")
    return notes


# ---------------------------------------------------------------- lineage of inputs, read cheaply

def model_fingerprint_of(path: Path | str | None) -> str | None:
    """The model fingerprint an embeddings input records (manifest or header), or None if it has none.

    Reads only the manifest or the safetensors header; unreadable inputs give None (their
    reader reports them properly later).
    """
    from compatctl.store.validate import read_json_file

    if path is None:
        return None
    path = Path(path)
    try:
        if path.is_dir():
            return read_json_file(path / "manifest.json", "manifest").get("model_fingerprint")
        if path.suffix == ".safetensors":
            from compatctl.store.artifacts import read_header

            return read_header(path).get("model_fingerprint")
    except (OSError, ValueError, AttributeError, BadInputError):
        return None
    return None
