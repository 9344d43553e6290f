"""NEW_GALLERY on disk: resume an interrupted run, continue an earlier one, refuse a foreign one.

States of ``--out`` and what a run does with each:

- missing or empty: a fresh run.
- a progress file (unfinished run) or manifest with this run's resume key: resume; complete
  shards are kept, the rest are written.
- a complete NEW_GALLERY from the same GALLERY, transform and side-info but other settings
  (typically a smaller budget): **continue in place**. This run writes its progress file, then
  drops the old manifest (so the old shards can never be mistaken for this run's), and rewrites
  each shard; rows the old shard already holds as ``backfilled`` and that this run's budget
  also backfills are copied, not re-embedded. Until the run finishes the directory has no
  manifest (readers are told it is incomplete); a kill at any point is resumed by re-running.
- anything else (another GALLERY or transform, an unfinished run with other settings, a
  folder that is not an embedding set): BadInputError.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store.columns import read_text_or_int
from compatctl.store.artifacts import file_sha256
from compatctl.store.embeddings import MANIFEST, claim_directory, is_temp_file, shard_file
from compatctl.store.validate import check_progress_record, read_json_file

LINEAGE = {"gallery_fingerprint": "GALLERY", "transform_fingerprint": "transform",
           "side_info_fingerprint": "side-info"}


def _check_lineage(out: Path, previous: dict | None, lineage: dict) -> None:
    if not previous:
        raise BadInputError(f"--out {out}: holds an embedding set that compatctl backfill did not write; "
                            "choose another --out (GALLERY is never overwritten)")
    for key, what in LINEAGE.items():
        if previous.get(key) != lineage.get(key):
            path = previous.get(key.replace('_fingerprint', ''))
            same = path is not None and path == lineage.get(key.replace('_fingerprint', ''))
            note = ": same path, other content or --columns" if same else ""
            raise BadInputError(f"--out {out}: holds a NEW_GALLERY made from another {what} "
                                f"({path or previous.get(key)}{note}); "
                                "choose another --out or delete it to start over")
    if (previous.get("shard_rows"), previous.get("rows")) != (lineage["shard_rows"], lineage["rows"]):
        raise BadInputError(f"--out {out}: its shard layout differs from GALLERY's; choose another --out")


def check_budget(out: Path | None, budget: float, *, force: bool) -> None:
    """Refuse a smaller ``budget`` than the one of the complete NEW_GALLERY at ``out``, unless ``force``:
    rewriting it would turn expensive re-embedded rows back into transformed ones. Reads only
    the manifest, so it runs before any work."""
    manifest = Path(out) / MANIFEST if out is not None else None
    if manifest is None or not manifest.is_file():
        return
    try:
        earlier = read_json_file(manifest, "manifest").get("backfill") or {}
    except BadInputError:
        return  # an unreadable manifest is reported by prepare_destination
    previous = earlier.get("budget")
    if force or not isinstance(previous, (int, float)) or budget >= previous:
        return
    raise BadInputError(f"--out {out}: holds a NEW_GALLERY backfilled at --budget {previous} "
                        f"({earlier.get('budget_rows')} re-embedded rows); --budget {budget} would throw "
                        f"re-embedded rows away; pass --budget {previous} or more to continue it, choose "
                        "another --out, or add --force to shrink it")


def prepare_destination(out: Path, *, resume_key: str, lineage: dict, part: tuple[int, int]) -> str:
    """Check ``out`` against this run; return "fresh", "resume" or "continue" (see module doc).

    Raises BadInputError when ``out`` holds something this run must not touch.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out}: exists and is not a directory; choose another --out")
    if not out.is_dir() or not any(not is_temp_file(p) for p in out.iterdir()):
        return "fresh"
    manifest = out / MANIFEST
    if manifest.is_file():
        info = read_json_file(manifest, "manifest")
        if info.get("resume_key") == resume_key:
            return "resume"
        _check_lineage(out, info.get("backfill"), lineage)
        for index in damaged_shards(out):  # checked while the manifest still records them: once it is
            shard_file(out, index).unlink()  # gone, a damaged shard's backfilled rows would look reusable
        claim_directory(out, part, resume_key)  # before the old manifest goes
        manifest.unlink(missing_ok=True)
        return "continue"
    keys = {read_json_file(f, "progress file").get("resume_key") for f in out.glob("progress.part-*.json")}
    if keys == {resume_key}:
        return "resume"
    if keys:
        raise BadInputError(f"--out {out}: holds an unfinished backfill with other inputs or settings; "
                            "re-run that command to finish it (then continue from it), or delete it")
    raise BadInputError(f"--out {out}: exists and is not an embedding set; choose another --out or empty it")


def remove_temp_files(out: Path) -> None:
    """Drop temp files that killed writes left in a now complete NEW_GALLERY."""
    for file in Path(out).iterdir():
        if is_temp_file(file):
            file.unlink(missing_ok=True)


def damaged_shards(out: Path, indices: list[int] | None = None) -> set[int]:
    """Shards (of ``indices``, default all) that a record at ``out`` (manifest or progress file) lists
    but whose file differs from the record in size or sha256: corrupt or truncated.

    Their rows must never be reused: a re-run that copied a damaged shard's backfilled rows into a
    fresh shard would give the corruption a valid checksum instead of repairing it. Hashes only
    the recorded shards among ``indices`` (on a resume, the pending ones: intact shards are not
    pending).
    """
    wanted = None if indices is None else set(indices)
    records = [out / MANIFEST, *out.glob("progress.part-*.json")]
    damaged = set()
    for record_file in records:
        if not record_file.is_file():
            continue
        for entry in check_progress_record(out, read_json_file(record_file, "embedding-set record")):
            index, file = entry["index"], out / entry["file"]
            if (wanted is None or index in wanted) and file.is_file() and \
                    (file.stat().st_size != entry["bytes"] or file_sha256(file) != entry["sha256"]):
                damaged.add(index)
    return damaged


def earlier_backfilled(out: Path, index: int, ids: np.ndarray) -> np.ndarray:
    """Mask of rows that an earlier NEW_GALLERY shard file already holds as backfilled.

    Files are written atomically, so one that exists is complete: either the earlier run's or
    this run's own (killed before it was recorded); both hold true new-model rows. A file whose
    ids differ from ``ids`` gives an all-False mask. Callers skip :func:`damaged_shards`.
    """
    from safetensors import safe_open

    from compatctl.store import PROVENANCE

    file = shard_file(out, index)
    if not file.is_file():
        return np.zeros(len(ids), bool)
    try:
        with safe_open(str(file), framework="numpy") as handle:
            stored = dict(ids=handle.get_tensor("ids")) if "ids" in handle.keys() else \
                dict(ids_utf8=handle.get_tensor("ids_utf8"))
            same = np.array_equal(read_text_or_int(stored, "ids"), ids)
            provenance = handle.get_tensor("provenance") if same else None
    except Exception:  # an unreadable leftover is simply not reused
        return np.zeros(len(ids), bool)
    if provenance is None:
        return np.zeros(len(ids), bool)
    return provenance == PROVENANCE.index("backfilled")


def earlier_rows(out: Path, index: int, mask: np.ndarray) -> np.ndarray:
    """Embeddings of the ``mask`` rows of an earlier shard file (see :func:`earlier_backfilled`)."""
    from safetensors import safe_open

    with safe_open(str(shard_file(out, index)), framework="numpy") as handle:
        return handle.get_tensor("embeddings")[mask].astype(np.float32)


def backfilled_ids(out: Path, lineage: dict) -> np.ndarray:
    """Ids an existing complete NEW_GALLERY at ``out`` holds as backfilled (empty if ``out`` is absent).

    Raises BadInputError when ``out`` is unfinished or comes from another GALLERY or transform.
    """
    from compatctl.store import PROVENANCE, open_embeddings

    out = Path(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return np.empty(0, np.int64)
    existing = open_embeddings(out)
    _check_lineage(out, existing.header.get("backfill"), lineage)
    backfilled = PROVENANCE.index("backfilled")
    found = [existing.column("ids", i, verify=False)[existing.column("provenance", i, verify=False) == backfilled]
             for i in range(existing.num_segments)]  # ids and provenance only, not the embeddings
    return np.concatenate(found) if found else np.empty(0, np.int64)
