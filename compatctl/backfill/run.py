"""``backfill``: write NEW_GALLERY = transformed GALLERY with the budget's best rows replaced.

Two streamed passes over GALLERY. The first collects ids and the order's per-row fact and
picks the budget's rows (``plan.py``); the second writes each output shard ``i`` from gallery
shard ``i``: the transform applied to the whole shard (so values never depend on block sizes
or on which run wrote the shard), then the chosen rows replaced by new-model embeddings,
copied from an earlier NEW_GALLERY when it already holds them. Memory is bounded by the
gallery's shard size (plus O(N) ids and per-row facts), never by the gallery.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compatctl.backfill.destination import (backfilled_ids, check_budget, damaged_shards, earlier_backfilled,
                                            earlier_rows, prepare_destination, remove_temp_files)
from compatctl.orders import ORDERS, budget_rows
from compatctl.backfill.plan import check_plan_path, chosen_rows, write_plan
from compatctl.backfill.rows import GalleryShards, RowSpill, content_fingerprint, missing_ids_message, scratch_dir
from compatctl.backfill.sources import new_row_source
from compatctl.errors import BadInputError
from compatctl.store import PROVENANCE, EmbeddingBlock, EmbeddingSetWriter, open_embeddings
from compatctl.store.sources import check_columns_apply, check_named_columns
from compatctl.store.outputs import remove_stale_scratch

NATIVE, TRANSFORMED, BACKFILLED = (PROVENANCE.index(name) for name in ("native", "transformed", "backfilled"))
DEFAULT_BLOCK_ROWS = 65536
# progress(stage, rows_done, rows_total); stages: "scan", "merge", "write"
Progress = Callable[[str, int, int], None]


@dataclasses.dataclass
class Inputs:
    """What one backfill run reads, opened and checked."""

    gallery_path: Path
    transform_path: Path
    gallery: object
    transform: object
    shards: GalleryShards
    side_info: object | None
    warnings: list[str]

    def lineage(self) -> dict:
        side = self.side_info
        return {"gallery": str(self.gallery_path), "gallery_fingerprint": content_fingerprint(self.gallery),
                "transform": str(self.transform_path), "transform_fingerprint": self.transform.fingerprint,
                "side_info": str(side.path) if side else None,
                "side_info_fingerprint": content_fingerprint(side) if side else None,
                "rows": self.shards.rows, "shard_rows": self.shards.shard_rows}


def open_inputs(gallery_path, transform_path, *, side_info_path, force: bool, block_rows: int,
                columns: dict | None = None) -> Inputs:
    """Open GALLERY, the transform and side-info (``columns``: --columns, for those that have columns);
    check they fit together (BadInputError if not)."""
    from compatctl.transform import check_compatible, load_transform
    from compatctl.transform.chain import open_chain, read_versions

    gallery = open_embeddings(gallery_path, columns, shared_columns=True)
    side_info = open_embeddings(side_info_path, columns, shared_columns=True) if side_info_path is not None else None
    check_named_columns(columns, {"GALLERY": gallery, "--side-info": side_info})
    paths = list(transform_path) if isinstance(transform_path, (list, tuple)) else [transform_path]
    if len(paths) > 1 or read_versions(gallery) is not None:  # a chain, or rows of several versions
        transform, warnings = open_chain(paths, gallery, force=force, side_info_source=side_info)
    else:
        transform = load_transform(paths[0])
        warnings = check_compatible(transform, gallery, force=force, side_info_source=side_info)
    return Inputs(Path(gallery_path), Path(transform.path), gallery, transform,
                  GalleryShards(gallery, block_rows), side_info, warnings)


def _side_info_spill(inputs: Inputs, scratch: Path, block_rows: int, progress) -> RowSpill | None:
    """Side-info rows for every gallery row, in gallery order (errors name missing ids)."""
    if inputs.side_info is None:
        return None
    ids = np.concatenate([inputs.shards.ids(i) for i in range(inputs.shards.num_shards)])
    spill = RowSpill(scratch, "side-info.f32", np.arange(len(ids)), ids, inputs.side_info.dim)
    spill.fill(inputs.side_info.iter_blocks(block_rows), progress)
    missing = spill.missing_ids(ids)
    if len(missing):
        raise BadInputError(missing_ids_message("gallery", f"--side-info {inputs.side_info.path}", missing,
                                                "pass side-info embeddings of every gallery item"))
    return spill


class ShardTransformer:
    """The transform applied to one whole gallery shard (values independent of block sizes).

    Side-info, when the transform takes it, is spilled in gallery order on first use.
    """

    def __init__(self, inputs: Inputs, *, scratch: Path, block_rows: int, progress: Progress | None):
        self.inputs, self.scratch, self.block_rows, self.progress = inputs, scratch, block_rows, progress
        self._side_spill: RowSpill | None = None

    def side_info(self, start: int, stop: int) -> np.ndarray | None:
        if self.inputs.side_info is None:
            return None
        if self._side_spill is None:
            advance = _count(self.progress, "side-info", self.inputs.side_info.rows)
            self._side_spill = _side_info_spill(self.inputs, self.scratch, self.block_rows, advance)
        return self._side_spill.rows(start, stop)

    def __call__(self, index: int) -> tuple[EmbeddingBlock, np.ndarray, np.ndarray | None]:
        """(old rows of shard ``index``, their transformed embeddings, uncertainty or None)."""
        old = EmbeddingBlock.concat([block for _, block in self.inputs.shards.blocks(index)])
        bounds = self.inputs.shards.bounds(index)
        rows = {"rows": bounds} if hasattr(self.inputs.transform, "links") else {}  # a chain: per-row versions
        embeddings, uncertainty = self.inputs.transform.apply(old.embeddings, self.side_info(*bounds), **rows)
        return old, embeddings, uncertainty

    def native_rows(self, index: int) -> np.ndarray | bool:
        """Rows of shard ``index`` already at the newest model (a mixed-version gallery), else False."""
        native = getattr(self.inputs.transform, "native_rows", None)
        return native(*self.inputs.shards.bounds(index)) if native else False


def resume_key(lineage: dict, *, rows: int, order: str, seed: int, source_identity: str | None) -> str:
    """Hash of everything that decides NEW_GALLERY's content (settings irrelevant at budget 0 dropped)."""
    facts = {"version": 1, **{k: v for k, v in lineage.items() if k.endswith("fingerprint")},
             "budget_rows": rows, "order": order if rows else None,
             "seed": seed if rows and order == "random" else None, "source": source_identity if rows else None}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def _check_options(inputs: Inputs, *, order: str, rows: int, out, plan_only: bool, plan_path) -> None:
    if order not in ORDERS:
        raise BadInputError(f"--order {order!r}: unknown; valid orders: {', '.join(ORDERS)}")
    if rows and order == "uncertainty" and not inputs.transform.has_uncertainty:
        raise BadInputError(f"--order uncertainty: {inputs.transform_path} has no uncertainty head; re-fit it "
                            "with uncertainty=true, or use --order random or norm")
    if plan_only:
        check_plan_path(plan_path)
    elif out is None:
        raise BadInputError("--out NEW_GALLERY is required (unless --plan-only)")
    if out is not None and Path(out).resolve() == inputs.gallery_path.resolve():
        raise BadInputError(f"--out {out}: is GALLERY itself; GALLERY is never modified, choose another --out")


def _count(progress: Progress | None, stage: str, total: int) -> Callable[[int], None]:
    """An ``advance(rows)`` callable reporting cumulative rows of one stage."""
    done = [0]

    def advance(rows: int) -> None:
        done[0] += rows
        if progress:
            progress(stage, done[0], total)
    return advance


def backfill(gallery_path, transform_path, out, *, budget: float = 0.0, order: str = "random", seed: int = 0,
             side_info_path=None, new_model=None, data: str | None = None, new_embeddings=None,
             part: tuple[int, int] = (1, 1), force: bool = False, plan_only: bool = False, plan_path=None,
             block_rows: int = DEFAULT_BLOCK_ROWS, columns: dict | None = None,
             progress: Progress | None = None) -> dict:
    """Apply a transform to GALLERY and backfill a budget of its rows with new-model embeddings.

    Every GALLERY row appears once in NEW_GALLERY (``out``), same id, label and row order; the
    first ``ceil(budget*N)`` rows of ``order`` get a new-model embedding (provenance backfilled,
    from ``new_model`` + ``data`` or merged by id from ``new_embeddings``), the rest the
    transformed one. Resumable (re-run after a kill), ``part=(I, N)`` writes one worker's shards,
    an earlier NEW_GALLERY of the same GALLERY and transform at ``out`` is continued (its
    backfilled rows are reused). ``plan_only`` writes the budget's ordered ids to ``plan_path``
    instead. ``transform_path`` may be a list: a chain of transforms applied in order
    (transform/chain.py; also used for a gallery with per-row versions). Returns a summary
    dict. ``columns`` (``--columns``) names the columns of every GALLERY, side-info and new-embeddings
    input that has columns (Parquet, .npy folders' metadata). Raises BadInputError (see the backfill docs).
    """
    started = time.perf_counter()
    budget_rows(budget, 0)  # validates the fraction before any file is read
    check_columns_apply(columns, {"GALLERY": gallery_path, "--side-info": side_info_path,
                                  "--new-embeddings": new_embeddings})
    if not plan_only:
        check_budget(out, budget, force=force)
    cleaned = remove_stale_scratch(Path(out if out is not None else plan_path)) if (out or plan_path) else []
    inputs = open_inputs(gallery_path, transform_path, side_info_path=side_info_path, force=force,
                         block_rows=block_rows, columns=columns)
    rows = budget_rows(budget, inputs.shards.rows)
    _check_options(inputs, order=order, rows=rows, out=out, plan_only=plan_only, plan_path=plan_path)
    scratch = scratch_dir(Path(out if out is not None else plan_path), part)
    settings = dict(rows=rows, order=order, seed=seed, block_rows=block_rows, scratch=scratch, progress=progress)
    try:
        if plan_only:
            summary = _plan_only(inputs, out, Path(plan_path), **settings)
        else:
            sources = dict(new_model=new_model, data=data, new_embeddings=new_embeddings, force=force,
                           columns=columns)
            summary = _backfill(inputs, Path(out), part=part, budget=budget, sources=sources, **settings)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    return {**summary, "rows": inputs.shards.rows, "budget": budget, "budget_rows": rows, "order": order,
            "seed": seed, "seconds": seconds,
            "warnings": cleaned + inputs.warnings + summary.pop("source_warnings", [])}


def _choose(inputs: Inputs, transformer: ShardTransformer, *, rows: int, order: str, seed: int,
            progress) -> tuple[np.ndarray, np.ndarray]:
    """(gallery ids [N], row indices of the budget in order); both empty when ``rows`` is 0."""
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return chosen_rows(inputs.shards, order=order, seed=seed, budget_rows=rows, transformer=transformer,
                       progress=_count(progress, "scan", inputs.shards.rows))


def _plan_only(inputs: Inputs, out, plan_path: Path, *, rows, order, seed, block_rows, scratch, progress) -> dict:
    transformer = ShardTransformer(inputs, scratch=scratch, block_rows=block_rows, progress=progress)
    ids, picked = _choose(inputs, transformer, rows=rows, order=order, seed=seed, progress=progress)
    planned_ids = ids[picked]
    done = np.zeros(len(planned_ids), bool)
    if out is not None and rows:
        done = np.isin(planned_ids, backfilled_ids(Path(out), inputs.lineage()))
    write_plan(plan_path, np.arange(len(planned_ids))[~done], planned_ids[~done])
    return {"plan": str(plan_path), "planned_rows": int((~done).sum()), "already_backfilled": int(done.sum())}


def _header(inputs: Inputs, lineage: dict, *, budget: float, rows: int, order: str, seed: int, source) -> dict:
    settings = {"budget": budget, "budget_rows": rows, "order": order if rows else None,
                "seed": seed if rows else None, "new_rows": source.identity if source else None,
                "new_rows_fingerprint": source.model_fingerprint if source else None}
    return {"model_fingerprint": inputs.transform.new_fingerprint, "source": str(inputs.gallery_path),
            "config": settings, "backfill": {**lineage, **settings}}


def _backfill(inputs: Inputs, out: Path, *, part, budget, sources: dict, rows, order, seed, block_rows,
              scratch, progress) -> dict:
    source = new_row_source(**sources, transform=inputs.transform, scratch=scratch,
                            block_rows=block_rows) if rows else None
    lineage = inputs.lineage()
    key = resume_key(lineage, rows=rows, order=order, seed=seed, source_identity=source and source.identity)
    mode = prepare_destination(out, resume_key=key, lineage=lineage, part=part)
    writer = EmbeddingSetWriter(out, rows=inputs.shards.rows, dim=inputs.transform.new_dim,
                                header=_header(inputs, lineage, budget=budget, rows=rows, order=order, seed=seed,
                                               source=source),
                                resume_key=key, shard_rows=inputs.shards.shard_rows, part=part,
                                has_labels=inputs.gallery.has_labels,
                                has_uncertainty=inputs.transform.has_uncertainty,
                                id_type=inputs.gallery.id_type, label_type=inputs.gallery.label_type or "int64")
    pending = writer.pending_shards()
    stats = {"out": str(out), "mode": mode, "part": list(part), "shards_total": writer.num_shards,
             "shards_written": len(pending), "rows_written": 0, "backfilled_rows": 0, "reused_rows": 0,
             "new_rows": 0, "source_warnings": source.warnings if source is not None else []}
    if pending:
        transformer = ShardTransformer(inputs, scratch=scratch, block_rows=block_rows, progress=progress)
        ids, picked = _choose(inputs, transformer, rows=rows, order=order, seed=seed, progress=progress)
        chosen = np.zeros(inputs.shards.rows, bool)
        chosen[picked] = True
        reuse = _reusable(out, inputs.shards, pending, chosen, ids) if rows and mode != "fresh" else {}
        if source is not None:
            _prepare_source(source, inputs.shards, pending, chosen, reuse, ids, progress)
        _write_shards(writer, pending, transformer, chosen, reuse, source, out, stats,
                      _count(progress, "write", sum(b - a for a, b in map(writer.shard_bounds, pending))))
    stats["complete"] = writer.finish()
    if stats["complete"]:
        remove_temp_files(out)
    return stats


def _reusable(out: Path, shards: GalleryShards, pending: list[int], chosen: np.ndarray,
              ids: np.ndarray) -> dict[int, np.ndarray]:
    """Per pending shard: chosen rows an existing, undamaged shard file at ``out`` holds as backfilled."""
    reuse = {}
    damaged = damaged_shards(out, pending)
    for index in pending:
        if index in damaged:
            continue
        start, stop = shards.bounds(index)
        reuse[index] = chosen[start:stop] & earlier_backfilled(out, index, ids[start:stop])
    return reuse


def _prepare_source(source, shards: GalleryShards, pending: list[int], chosen: np.ndarray,
                    reuse: dict[int, np.ndarray], ids: np.ndarray, progress) -> None:
    """Gather the new-model rows this run writes: chosen, in a pending shard, not reusable."""
    needed = []
    for index in pending:
        start, stop = shards.bounds(index)
        fresh = chosen[start:stop] & ~reuse.get(index, False)
        needed.append(start + np.flatnonzero(fresh))
    target_rows = np.concatenate(needed) if needed else np.empty(0, np.int64)
    source.prepare(target_rows, ids[target_rows], _count(progress, "merge", source.scan_rows))


def _write_shards(writer: EmbeddingSetWriter, pending: list[int], transformer: ShardTransformer,
                  chosen: np.ndarray, reuse: dict, source, out: Path, stats: dict, advance) -> None:
    """Write each pending shard: transformed rows, chosen ones replaced by new-model rows."""
    for index in pending:
        old, embeddings, uncertainty = transformer(index)
        start, stop = writer.shard_bounds(index)
        picked = chosen[start:stop]
        reused = reuse.get(index, np.zeros_like(picked))
        fresh = picked & ~reused
        if reused.any():
            embeddings[reused] = earlier_rows(out, index, reused)
        if fresh.any():
            embeddings[fresh] = source.rows(start, stop)
        provenance = np.where(picked, BACKFILLED, TRANSFORMED).astype(np.uint8)
        provenance[transformer.native_rows(index) & ~picked] = NATIVE
        writer.write_shard(index, EmbeddingBlock(embeddings, old.ids, old.labels, provenance, uncertainty))
        stats["rows_written"] += len(old)
        stats["backfilled_rows"] += int(picked.sum())
        stats["reused_rows"] += int(reused.sum())
        stats["new_rows"] += int(fresh.sum())
        advance(len(old))
