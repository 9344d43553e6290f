"""``--engine ray`` for ``embed`` and ``backfill``: each Ray worker runs one ``--part`` of the job.

Worker ``k`` of ``W`` runs the very library call a batch system would run as ``--part k/W``
(``embed_dataset`` / ``backfill``), so every shard is made by the same code from the same rows
and the output is byte-identical to one process. Each worker loads its model once and writes
its shards straight into ``--out`` (a file system every node sees), recording them in its own
progress file; workers write no manifest (``deferred_manifest``): the coordinator writes it
once all parts have ended, after re-checking every shard's checksum.

Failures resume like today: a worker that dies is retried by Ray and skips the shards it had
already recorded; a killed driver is re-run with the same command and every worker skips the
complete shards (the progress files of any earlier run, local, ``--part`` or Ray, count).
Progress: workers post their stage counts to a small actor the coordinator polls.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import ray

from compatctl.engines import RaySettings
from compatctl.errors import BadInputError, CompatctlError

Progress = Callable[[str, int, int], None]
POLL_S = 0.3          # how often the coordinator refreshes the progress display
REPORT_EVERY_S = 0.25  # how often a worker posts its counts (and always at a stage's end)
MAX_RETRIES = 3        # Ray re-runs a part whose worker process died this many times


class EngineError(CompatctlError):
    """A Ray worker kept failing, or the cluster cannot run the job as asked."""


def connect(settings: RaySettings) -> bool:
    """Join the cluster at ``settings.address`` (or start a local one); True if this call started Ray."""
    if ray.is_initialized():
        return False
    options = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                   configure_logging=True)
    try:
        ray.init(address=settings.address, **options)
    except (ConnectionError, RuntimeError) as exc:
        where = settings.address or "a local Ray instance"
        raise BadInputError(f"--ray-address {where}: cannot connect ({str(exc).splitlines()[0][:160]}); "
                            "start a cluster with `ray start --head` or fix the address") from None
    return True


def worker_count(settings: RaySettings, shards: int | None = None) -> int:
    """``--workers``, else as many as the cluster's CPUs (or GPUs) allow; never more than the shards."""
    resources = ray.cluster_resources()
    if settings.gpus_per_worker > 0 and resources.get("GPU", 0) < settings.gpus_per_worker:
        raise BadInputError(f"--gpus-per-worker {settings.gpus_per_worker:g}: the Ray cluster has "
                            f"{resources.get('GPU', 0):g} GPUs; drop --gpus-per-worker or add GPU nodes")
    if settings.workers:
        count = settings.workers
    else:
        count = int(resources.get("CPU", 1) // settings.cpus_per_worker)
        if settings.gpus_per_worker > 0:
            count = min(count, int(resources["GPU"] // settings.gpus_per_worker))
    return max(1, min(count, shards or count))


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Per part: the latest (done, total) of each stage, and the pid of each attempt."""

    def __init__(self):
        self.counts: dict[int, dict[str, tuple[int, int]]] = {}
        self.attempts: dict[int, list[int]] = {}

    def started(self, part: int, pid: int) -> None:
        self.attempts.setdefault(part, []).append(pid)

    def report(self, part: int, counts: dict) -> None:
        self.counts[part] = counts

    def snapshot(self) -> tuple[dict, dict]:
        return self.counts, self.attempts


class _Reporter:
    """A worker's ``progress(stage, done, total)``: posts to the board at most every REPORT_EVERY_S."""

    def __init__(self, board, part: int):
        self.board, self.part, self.counts, self.sent = board, part, {}, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.counts[stage] = (int(done), int(total))
        now = time.monotonic()
        if done >= total or now - self.sent >= REPORT_EVERY_S:
            self.board.report.remote(self.part, dict(self.counts))
            self.sent = now


def _run_part(call: Callable, part: tuple[int, int], board, before_part: Callable | None):
    """One worker: ``call(part=..., progress=...)`` with the manifest left to the coordinator."""
    from compatctl.store.embeddings import deferred_manifest

    ray.get(board.started.remote(part[0], os.getpid()))  # delivered even if this worker dies next
    if before_part is not None:
        before_part(part)
    reporter = _Reporter(board, part[0])
    with deferred_manifest() as writers:
        result = call(part=part, progress=reporter)
    ray.get(board.report.remote(part[0], dict(reporter.counts)))
    return result, writers


def run_parts(call: Callable, settings: RaySettings, *, workers: int, progress: Progress | None = None,
              before_part: Callable | None = None, board=None) -> list[tuple[object, list[dict]]]:
    """Run ``call`` as parts 1/W .. W/W on Ray workers; [(its result, its writers' settings)] per part.

    ``before_part(part)`` runs first in each worker (tests inject faults with it). Raises the
    library's own CompatctlError when a part raised one, EngineError when a part's worker died
    more than MAX_RETRIES times.
    """
    board = board or ProgressBoard.remote()
    task = ray.remote(_run_part).options(num_cpus=settings.cpus_per_worker, num_gpus=settings.gpus_per_worker,
                                         max_retries=MAX_RETRIES, retry_exceptions=False)
    refs = [task.remote(call, (k, workers), board, before_part) for k in range(1, workers + 1)]
    shown: dict[str, tuple[int, int]] = {}
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        shown = _show(board, progress, shown)
    return [_result(ref, part, workers) for part, ref in enumerate(refs, 1)]


def _show(board, progress: Progress | None, shown: dict) -> dict:
    """Sum each stage's counts over the parts and pass the changed ones to ``progress``."""
    if progress is None:
        return shown
    counts, _ = ray.get(board.snapshot.remote())
    totals: dict[str, list[int]] = {}
    for stages in counts.values():
        for stage, (done, total) in stages.items():
            pair = totals.setdefault(stage, [0, 0])
            pair[0], pair[1] = pair[0] + done, pair[1] + total
    for stage, (done, total) in totals.items():
        if shown.get(stage) != (done, total):
            progress(stage, done, total)
    return {stage: tuple(pair) for stage, pair in totals.items()}


def _result(ref, part: int, workers: int):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, CompatctlError):
            raise exc.cause from None  # the library's one-line message, as in one process
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError) as exc:
        raise EngineError(f"--engine ray: the worker of part {part}/{workers} died {MAX_RETRIES + 1} times "
                          f"({type(exc).__name__}); re-run the same command to resume (complete shards "
                          "are kept)") from None


def finish_set(parts: list[tuple[object, list[dict]]]) -> bool:
    """The coordinator's manifest: one writer (part 1/1) re-checks every shard and writes it if all are there."""
    from compatctl.store import EmbeddingSetWriter

    settings = [entry for _, writers in parts for entry in writers]
    if not settings:
        return False
    if any(entry != settings[0] for entry in settings[1:]):
        raise EngineError(f"{settings[0]['path']}: the Ray workers disagree on the set they write (different "
                          "compatctl versions on the nodes?); install one version everywhere and re-run")
    return EmbeddingSetWriter(**settings[0]).finish()


def embed_on_ray(model_path, data_spec: str, out, *, settings: RaySettings, progress: Progress | None = None,
                 before_part: Callable | None = None, **options) -> tuple[Path, bool]:
    """``embed_dataset`` spread over Ray workers (``options``: its keyword arguments but part/progress).

    Returns (``out``, complete). The set is byte-identical to ``embed_dataset`` in one process.
    """
    from compatctl.models.embed import embed_dataset

    call = functools.partial(embed_dataset, model_path, data_spec, out, **options)
    started_here = connect(settings)
    try:
        parts = run_parts(call, settings, workers=worker_count(settings), progress=progress,
                          before_part=before_part)
        return Path(out), finish_set(parts)
    finally:
        if started_here:
            ray.shutdown()


SUMMED = ("shards_written", "rows_written", "backfilled_rows", "reused_rows", "new_rows")


def backfill_on_ray(gallery_path, transform_path, out, *, settings: RaySettings, progress: Progress | None = None,
                    before_part: Callable | None = None, **options) -> dict:
    """``backfill`` spread over Ray workers; returns its summary summed over the parts.

    ``options`` are ``backfill``'s keyword arguments except part, progress and plan_only
    (a plan is one pass: run it without Ray).
    """
    from compatctl.backfill import backfill
    from compatctl.backfill.destination import remove_temp_files
    from compatctl.store import open_embeddings

    started = time.perf_counter()
    gallery = open_embeddings(gallery_path, options.get("columns"), shared_columns=True)
    shards = len(getattr(gallery, "shards", [None]))
    call = functools.partial(backfill, gallery_path, transform_path, out, **options)
    started_here = connect(settings)
    try:
        workers = worker_count(settings, shards)
        parts = run_parts(call, settings, workers=workers, progress=progress, before_part=before_part)
        complete = finish_set(parts)
    finally:
        if started_here:
            ray.shutdown()
    if complete:
        remove_temp_files(Path(out))
    summaries = [summary for summary, _ in parts]
    summary = dict(summaries[0], part=[1, 1], complete=complete, seconds=time.perf_counter() - started,
                   engine={"name": "ray", "workers": workers},
                   warnings=list(dict.fromkeys(w for s in summaries for w in s.get("warnings", []))))
    for key in SUMMED:
        summary[key] = sum(s.get(key, 0) for s in summaries)
    return summary
