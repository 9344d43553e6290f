"""Which rows a budget backfills: a first streamed pass over GALLERY, then the order.

The pass collects only O(N) small arrays — ids and the one per-row fact the order reads (the
transform's uncertainty, or the transformed embeddings' norms) — never the gallery itself.
Because orders depend only on those facts (see ``compatctl/orders.py``), the chosen rows are the same
ones ``compatctl eval --backfill-with`` replaces at that fraction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compatctl.orders import ORDER_NEEDS, backfill_order, row_norms
from compatctl.backfill.rows import GalleryShards
from compatctl.errors import BadInputError
from compatctl.store import atomic_write_bytes

# shard_transformer(index) -> (old rows of the shard, transformed embeddings, uncertainty or None)
ShardTransformer = Callable[[int], tuple[object, np.ndarray, np.ndarray | None]]


def scan_gallery(shards: GalleryShards, needs: tuple[str, ...], transformer: ShardTransformer,
                 progress: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Stream GALLERY once; return ``ids`` plus the facts named in ``needs`` ([N] arrays)."""
    ids, facts = [], {name: [] for name in needs}
    for index in range(shards.num_shards):
        if needs:
            old, embeddings, uncertainty = transformer(index)
            ids.append(old.ids)
            if "uncertainty" in facts:
                facts["uncertainty"].append(uncertainty)
            if "norms" in facts:
                facts["norms"].append(row_norms(embeddings))
        else:
            ids.append(shards.ids(index))
        if progress:
            progress(len(ids[-1]))
    return {"ids": np.concatenate(ids), **{name: np.concatenate(parts) for name, parts in facts.items()}}


def chosen_rows(shards: GalleryShards, *, order: str, seed: int, budget_rows: int,
                transformer: ShardTransformer, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """(gallery ids [N], the first ``budget_rows`` row indices of the order, first first)."""
    facts = scan_gallery(shards, ORDER_NEEDS[order], transformer, progress)
    ranked = backfill_order(order, ids=facts["ids"], uncertainty=facts.get("uncertainty"),
                            norms=facts.get("norms"), seed=seed)
    return facts["ids"], ranked[:budget_rows]


def _csv(ranks: np.ndarray, ids: np.ndarray) -> str:
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")  # quotes string ids holding commas or quotes
    writer.writerow(["rank", "id"])
    writer.writerows(zip(ranks.tolist(), ids.tolist()))
    return text.getvalue()


def _jsonl(ranks: np.ndarray, ids: np.ndarray) -> str:
    return "".join(json.dumps({"rank": r, "id": i}) + "\n" for r, i in zip(ranks.tolist(), ids.tolist()))


PLAN_FORMATS = {".csv": _csv, ".jsonl": _jsonl, ".ndjson": _jsonl, ".json": _jsonl}


def check_plan_path(path: Path | None) -> None:
    """Raise BadInputError unless ``path`` is given and ends in a known plan format."""
    if path is None:
        raise BadInputError("--plan-only needs --plan FILE (.csv or .jsonl) to write the plan to")
    if Path(path).suffix not in PLAN_FORMATS:
        raise BadInputError(f"--plan {path}: unknown plan format; use a .csv (rank,id) or .jsonl file")


def write_plan(path: Path, ranks: np.ndarray, ids: np.ndarray) -> None:
    """Write the ordered ids to backfill (rank = position in the full order, from 0), atomically."""
    atomic_write_bytes(Path(path), PLAN_FORMATS[Path(path).suffix](ranks, ids).encode())


def read_plan(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ranks int64, ids) of a plan written by :func:`write_plan`.

    ids are int64 for an integer gallery, text for a string one: a .jsonl plan keeps each id's
    JSON type; in a .csv plan ids are text unless every one is a whole number.
    """
    import csv

    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".csv":
        pairs = list(csv.reader(text.splitlines()))[1:]
    else:
        pairs = [(row["rank"], row["id"]) for row in map(json.loads, text.splitlines())]
    ranks = np.array([rank for rank, _ in pairs], dtype=np.int64)
    ids = [identifier for _, identifier in pairs]
    if all(isinstance(i, int) or (isinstance(i, str) and i.lstrip("-").isdigit()) for i in ids):
        return ranks, np.array(ids, dtype=np.int64).reshape(-1)
    return ranks, np.array([str(i) for i in ids], dtype=str)
