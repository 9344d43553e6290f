"""``eval --engine ray``: the gallery's shards spread over Ray actors, metrics merged exactly.

Actor ``k`` of ``W`` holds gallery shards ``k-1, k-1+W, ...`` (the ``--part k/W`` split) and
reads the queries itself, block by block, with the block boundaries of one process. Both
metrics decompose over any split of the gallery's columns, so they are merged exactly:

- full ranking (mAP, and top-k from the ranks): per query block, every actor returns the
  positives it holds (query row, score, gallery id); the coordinator gathers them, sorted by
  query row as one process does, and sends them back; every actor counts, per positive, its
  rows that beat it (higher score, or equal score and smaller id: TIE_RULE); the rank of a
  positive is 1 + the sum of those counts over the actors. The ranks are then the ones of
  one process, and ``MetricSums`` adds them in the same order: metrics are identical.
- top-k only (``with_map=False``): every actor keeps each query's k best rows of its shards;
  the coordinator merges the lists (score desc, then id asc) into the k best overall.

Each actor needs the gallery and query paths on a file system it can read.
"""

from __future__ import annotations

import time

import numpy as np
import ray

from compatctl.engines import RaySettings
from compatctl.engines.ray_engine import connect, worker_count
from compatctl.errors import BadInputError

TAG_SHIFT = 32  # a segment's tag: actor << 32 | segment index (which segment a positive came from)


class PartView:
    """The shards ``part`` (I, N) of a source, seen as a source of their own (rows in gallery order)."""

    def __init__(self, source, part: tuple[int, int]):
        self.source, self.part, self.path = source, part, source.path
        shards = getattr(source, "shards", None)
        if shards is None:
            self.rows = int(source.rows) if part[0] == 1 else 0
        else:
            self.rows = sum(int(shards[i]["rows"]) for i in range(len(shards)) if i % part[1] == part[0] - 1)

    def iter_blocks(self, block_rows: int = 65536, part=(1, 1), verify: bool = True):
        if self.rows:
            yield from self.source.iter_blocks(block_rows, part=self.part, verify=verify)


def _open_pair(query_path, gallery_path):
    from compatctl.evaluate.sources import unify_columns
    from compatctl.store import open_embeddings

    return unify_columns(open_embeddings(query_path), open_embeddings(gallery_path))


@ray.remote
class GalleryPart:
    """One actor: a part of the gallery, prepared once, and the query blocks in order."""

    def __init__(self, query_path: str, gallery_path: str, part: tuple[int, int], *, used: int, distance: str,
                 query_block: int, gallery_block: int, with_map: bool):
        from compatctl.evaluate.sources import Gallery, get_distance, query_blocks

        query, gallery = _open_pair(query_path, gallery_path)
        metric = get_distance(distance)
        self.actor = part[0]
        self.queries = query_blocks(query, used, metric, query_block)
        self.gallery = Gallery(PartView(gallery, part), used, metric, gallery_block,
                               **({} if with_map else {"cache_bytes": 0}))
        self.block = None
        self.held = None

    def positives(self) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """Next query block: (queries, query rows, scores, gallery ids, segment tags) of its positives here,
        and how many own rows were left out."""
        from compatctl.evaluate.retrieval import HELD_SCORES, label_relevance, segments

        self.block = queries = next(self.queries)
        self.held = None
        if self.gallery.kept and len(queries.ids) * self.gallery.rows <= HELD_SCORES:
            self.held = list(segments(queries, self.gallery))
        found, left_out = [], 0
        for index, segment in enumerate(self._segments()):
            rows, cols, _ = label_relevance(queries, segment)
            tag = (self.actor << TAG_SHIFT) | index
            found.append((rows, segment.scores[rows, cols], segment.gallery.ids[cols], np.full(len(rows), tag)))
            left_out += len(segment.self_rows)
        parts = [np.concatenate(column) for column in zip(*found)] if found else [np.zeros(0)] * 4
        rows, values, ids, tags = parts
        return (len(queries.ids), rows.astype(np.int64), values.astype(np.float32), ids.astype(np.int64),
                tags.astype(np.int64), left_out)

    def _segments(self):
        from compatctl.evaluate.retrieval import segments

        return iter(self.held) if self.held is not None else segments(self.block, self.gallery)

    def count_better(self, rows: np.ndarray, values: np.ndarray, ids: np.ndarray, tags: np.ndarray) -> np.ndarray:
        """Per positive of the current query block (sorted by row): the rows here that beat it."""
        from compatctl.evaluate.ranking import count_better

        better = np.zeros(len(rows), np.int64)
        for index, segment in enumerate(self._segments()):
            own_here = tags == ((self.actor << TAG_SHIFT) | index)
            better += count_better(segment.scores, segment.gallery.ids, rows, values, ids, own_here)
        self.held = None
        return better

    def top_k(self, k: int) -> tuple[list, np.ndarray, np.ndarray]:
        """Every query's k best rows here, its own row's label where found, and the label counts here."""
        from compatctl.evaluate.sources import exclude_self, score
        from compatctl.evaluate.topk import RunningTopK

        queries = list(self.queries)
        tops = [RunningTopK(len(q.ids), k) for q in queries]
        found = [np.zeros(len(q.ids), bool) for q in queries]
        label = [np.full(len(q.ids), -1, np.int64) for q in queries]
        labels = []
        for _, block in self.gallery.blocks():
            for query, top, own_found, own_label in zip(queries, tops, found, label):
                scores = score(query, block)
                rows, cols = exclude_self(scores, query.ids, block.ids)
                own_found[rows], own_label[rows] = True, block.labels[cols]
                top.merge(scores, block.ids, block.labels)
            labels.append(block.labels)
        classes, sizes = np.unique(np.concatenate(labels or [np.zeros(0, np.int64)]), return_counts=True)
        return ([(t.scores, t.ids, t.labels, f, lab, q.ids, q.labels)
                 for t, f, lab, q in zip(tops, found, label, queries)], classes, sizes)


def evaluate_on_ray(query_path, gallery_path, *, settings: RaySettings, distance: str = "cosine", topk=(1, 5),
                    dims: int | None = None, with_map: bool = True, map_at_r: bool = False,
                    query_block: int = 2048, gallery_block: int = 16384, progress=None) -> dict:
    """:func:`compatctl.evaluate.evaluate` of two stored sets, the gallery spread over Ray actors.

    Same report and, to the last bit, the same metrics as one process (plus ``engine``).
    Raises BadInputError as ``evaluate`` does.
    """
    from compatctl.evaluate.ranking import MetricSums
    from compatctl.evaluate.retrieval import build_report, check_blocks, check_topk
    from compatctl.evaluate.sources import dims_for, get_distance, require_labels

    started = time.perf_counter()
    query, gallery = _open_pair(query_path, gallery_path)
    ks = check_topk(topk)
    get_distance(distance)
    check_blocks(query_block, gallery_block)
    require_labels(query, gallery)
    dim_info = dims_for(query, gallery, dims)
    sums = MetricSums(ks, at_r=map_at_r, with_map=with_map)
    started_here = connect(settings)
    try:
        # every actor lives until the end: never more than the cluster can hold at once
        room = max(1, int(ray.cluster_resources().get("CPU", 1) // settings.cpus_per_worker))
        workers = min(worker_count(settings, len(getattr(gallery, "shards", [None]))), room)
        actors = [GalleryPart.options(num_cpus=settings.cpus_per_worker).remote(
            str(query_path), str(gallery_path), (k, workers), used=dim_info["used"], distance=distance,
            query_block=query_block, gallery_block=gallery_block, with_map=with_map)
            for k in range(1, workers + 1)]
        if with_map:
            _rank(actors, sums, int(query.rows), progress)
        else:
            _top_k(actors, sums, progress)
    finally:
        if started_here:
            ray.shutdown()
    report = build_report(sums, query, gallery, distance, dim_info, started)
    report["engine"] = {"name": "ray", "workers": workers}
    return report


def _get(refs):
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, BadInputError):
            raise exc.cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        from compatctl.engines.ray_engine import EngineError

        raise EngineError(f"--engine ray: an eval actor died ({str(exc).splitlines()[0][:120]}); re-run the "
                          "command (eval writes nothing until it ends)") from None


def _rank(actors, sums, total: int, progress) -> None:
    """Exact ranks of every positive, one query block at a time, merged over the actors."""
    done = 0
    while done < total:
        found = _get([actor.positives.remote() for actor in actors])
        n_queries = found[0][0]
        rows, values, ids, tags = (np.concatenate([f[i] for f in found]) for i in range(1, 5))
        order = np.argsort(rows, kind="stable")  # by query row, as one process orders them
        rows, values, ids, tags = rows[order], values[order], ids[order], tags[order]
        shared = [ray.put(array) for array in (rows, values, ids, tags)]
        better = np.sum(_get([actor.count_better.remote(*shared) for actor in actors]), axis=0, dtype=np.int64)
        sums.add_ranks(rows, better + 1, n_queries)
        sums.left_out += sum(f[5] for f in found)
        done += n_queries
        if progress is not None:
            progress("ranking", done, total)


def _top_k(actors, sums, progress) -> None:
    """The k best rows per query, merged over the actors (score desc, then id asc), then top-k hits."""
    from types import SimpleNamespace

    from compatctl.evaluate.topk import RunningTopK, _add_hits

    parts = _get([actor.top_k.remote(max(sums.ks)) for actor in actors])
    classes, where = np.unique(np.concatenate([p[1] for p in parts]), return_inverse=True)
    sizes = np.bincount(where, weights=np.concatenate([p[2] for p in parts]), minlength=len(classes))
    sizes = sizes.astype(np.int64)
    for block_tops in zip(*(p[0] for p in parts)):
        query = SimpleNamespace(ids=block_tops[0][5], labels=block_tops[0][6])
        merged = RunningTopK(len(query.ids), max(sums.ks))
        for scores, ids, labels, *_ in block_tops:  # each actor's k best: candidates to merge
            rows, slots = np.nonzero(scores > -np.inf)
            merged._keep_best(rows, scores[rows, slots], ids[rows, slots], labels[rows, slots])
        found = np.any([t[3] for t in block_tops], axis=0)
        own_label = np.sum([np.where(t[3], t[4], 0) for t in block_tops], axis=0)  # one actor holds it
        _add_hits(query, merged, found & (own_label == query.labels), classes, sizes, sums)
        sums.left_out += int(found.sum())
    if progress is not None:
        progress("top-k", 1, 1)
