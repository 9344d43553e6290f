"""`compare`: a candidate evaluation against a baseline and a ceiling, with flips and intervals.

The candidate (QUERY → GALLERY), the baseline (e.g. old/old) and the ceiling (e.g. new/new) are
each evaluated exactly (``evaluate_records``); a gallery defaults to its query set (the
leave-one-out protocol). Then, per metric M:

    gap_closed = (M − M_baseline) / (M_ceiling − M_baseline)    (None when the ceiling equals the baseline)

and, over the queries the candidate and the baseline both evaluate (matched by id):

    negative_flip_rate = fraction right at top-1 under the baseline and wrong under the candidate
    positive_flip_rate = fraction wrong under the baseline and right under the candidate

``per_class`` lists the classes whose top-1 falls most. Intervals: see ``intervals``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from compatctl.errors import BadInputError
from compatctl.evaluate.intervals import DEFAULT_RESAMPLES, bootstrap_intervals, check_level
from compatctl.evaluate.records import QueryRecords
from compatctl.evaluate.result_cache import ResultCache
from compatctl.evaluate.retrieval import evaluate_records
from compatctl.evaluate.sources import as_source, describe_source, source_name

PER_CLASS_SHOWN = 20


@dataclasses.dataclass
class Comparison:
    """The report and the per-query outcomes of a comparison (``per_query_rows`` for --per-query)."""

    report: dict
    candidate: QueryRecords
    baseline: QueryRecords | None = None

    def per_query_rows(self) -> list[dict]:
        """One dict per candidate query: id, rank of the first relevant row, AP, correct@1, flipped."""
        base = _by_id(self.baseline) if self.baseline is not None else {}
        ap = self.candidate.values.get("map")
        rows = []
        for i, query_id in enumerate(self.candidate.ids.tolist()):
            correct = bool(self.candidate.first_rank[i] == 1)
            row = {"id": query_id, "first_relevant_rank": int(self.candidate.first_rank[i]),
                   "ap": None if ap is None else float(ap[i]), "correct_at_1": correct}
            if self.candidate.labels is not None:
                row["label"] = self.candidate.labels[i].item()
            if self.baseline is not None:
                was = base.get(query_id)
                row["baseline_correct_at_1"] = None if was is None else bool(self.baseline.first_rank[was] == 1)
                row["flipped"] = None if was is None or row["baseline_correct_at_1"] == correct else \
                    ("negative" if row["baseline_correct_at_1"] else "positive")
            rows.append(row)
        return rows


def _by_id(records: QueryRecords) -> dict:
    return {query_id: i for i, query_id in enumerate(records.ids.tolist())}


def compare(query, gallery, *, baseline=None, baseline_gallery=None, ceiling=None, ceiling_gallery=None,
            ci: float | None = None, seed: int = 0, resamples: int = DEFAULT_RESAMPLES, cache_dir=None,
            **options) -> Comparison:
    """Evaluate QUERY → GALLERY, and against a baseline and/or ceiling when given.

    Args:
        query, gallery: the candidate's sources.
        baseline, ceiling: query sources of the baseline / ceiling (or None); their galleries
            default to the query source itself.
        ci: confidence level of the bootstrap intervals (None: no intervals).
        seed, resamples: of the bootstrap.
        cache_dir: a folder where the baseline's and the ceiling's evaluations are stored and
            reused while their inputs, options and compatctl are unchanged (``result_cache``);
            None: no cache. The candidate is always evaluated.
        options: passed to ``evaluate_records`` (distance, topk, dims, metrics, qrels, blocks, progress).
    Returns:
        A Comparison; its report is the candidate's report plus baseline, ceiling, gap_closed,
        flip rates, per_class and ci as available.
    Raises:
        BadInputError: a bad level, a baseline/ceiling gallery without its query set, a baseline
            sharing no query id with QUERY, or the evaluations' own errors.
    """
    check_level(ci)
    for name, main, extra in (("baseline", baseline, baseline_gallery), ("ceiling", ceiling, ceiling_gallery)):
        if extra is not None and main is None:
            raise BadInputError(f"--{name}-gallery needs --{name} (the {name}'s query set)")
    read = [getattr(as_source(s), "path", None) for s in (query, gallery, baseline, baseline_gallery, ceiling,
                                                           ceiling_gallery) if s is not None]
    cache = None if cache_dir is None else ResultCache(cache_dir, inputs=[p for p in read if p is not None])
    report, candidate = evaluate_records(query, gallery, **options)
    result = Comparison(report, candidate)
    others = {}
    for name, main, extra in (("baseline", baseline, baseline_gallery), ("ceiling", ceiling, ceiling_gallery)):
        if main is not None:
            other_report, records, cached = _evaluate_other(main, main if extra is None else extra, options, cache)
            _require_common_ids(candidate, records, query, main, name)
            report[name] = other_report["metrics"]
            report.setdefault("comparison", {})[name] = {**other_report["inputs"], "cache": cached}
            others[name] = records
    result.baseline = others.get("baseline")
    if "baseline" in report and "ceiling" in report:
        report["gap_closed"], report["undefined"] = gap_closed(report)
    if result.baseline is not None:
        report.update(flips(candidate, result.baseline))
        if candidate.labels is not None:
            report["per_class"] = per_class_change(candidate, result.baseline)
    if ci is not None:
        report["ci"] = intervals(report, candidate, others, level=ci, seed=seed, resamples=resamples,
                                 query=query, dims=report["dims"]["used"])
        for name in report.get("undefined", {}):  # no interval around a value that does not exist
            report["ci"]["low"][name] = report["ci"]["high"][name] = None
    return result


def _evaluate_other(query, gallery, options: dict, cache: ResultCache | None) -> tuple[dict, QueryRecords, str]:
    """(report, records, "off" | "hit" | "stored") of a baseline or ceiling evaluation."""
    if cache is None:
        return (*evaluate_records(query, gallery, **options), "off")
    key = cache.key(as_source(query), as_source(gallery), options)
    found = cache.load(key)
    if found is not None:
        return (*found, "hit")
    report, records = evaluate_records(query, gallery, **options)
    cache.store(key, report, records)
    return report, records, "stored"


def _require_common_ids(candidate: QueryRecords, other: QueryRecords, query, other_query, name: str) -> None:
    if len(_common(candidate.ids, other.ids)) == 0:
        raise BadInputError(f"--{name} {source_name(as_source(other_query))}: no query id in common with "
                            f"{source_name(as_source(query))} (e.g. {candidate.ids[:3].tolist()} vs "
                            f"{other.ids[:3].tolist()}); the {name} must embed the same queries with the same ids")


def _common(ids: np.ndarray, other: np.ndarray) -> np.ndarray:
    if (ids.dtype.kind in "US") != (other.dtype.kind in "US"):
        return np.zeros(0, ids.dtype)  # text ids never match integer ids
    return np.intersect1d(ids, other)


def gap_closed(report: dict) -> tuple[dict, dict]:
    """(gap_closed per metric, why each undefined one is undefined)."""
    values, undefined = {}, {}
    for name, value in report["metrics"].items():
        low, high = report["baseline"][name], report["ceiling"][name]
        if high == low:
            values[name] = None
            undefined[f"gap_closed.{name}"] = f"the ceiling's {name} equals the baseline's ({low:.4f}): no gap to close"
        else:
            values[name] = (value - low) / (high - low)
    return values, undefined


def _aligned(records: QueryRecords, ids: np.ndarray) -> np.ndarray:
    """Positions in ``records`` of ``ids`` (all present)."""
    order = np.argsort(records.ids, kind="stable")
    return order[np.searchsorted(records.ids[order], ids)]


def flips(candidate: QueryRecords, baseline: QueryRecords) -> dict:
    """Flip rates at top-1 over the queries both evaluate (matched by id)."""
    ids = _common(candidate.ids, baseline.ids)
    now = candidate.first_rank[_aligned(candidate, ids)] == 1
    before = baseline.first_rank[_aligned(baseline, ids)] == 1
    negative, positive = int(np.count_nonzero(before & ~now)), int(np.count_nonzero(~before & now))
    return {"negative_flip_rate": negative / len(ids), "positive_flip_rate": positive / len(ids),
            "flips": {"matched_queries": int(len(ids)), "negative": negative, "positive": positive,
                      "rule": "top-1 right under the baseline and wrong under the candidate (negative), "
                              "or the reverse (positive); queries matched by id"}}


def per_class_change(candidate: QueryRecords, baseline: QueryRecords) -> dict:
    """Top-1 per class (candidate labels) on matched queries; the classes that lose most first."""
    ids = _common(candidate.ids, baseline.ids)
    at = _aligned(candidate, ids)
    labels = candidate.labels[at]
    now = (candidate.first_rank[at] == 1).astype(np.float64)
    before = (baseline.first_rank[_aligned(baseline, ids)] == 1).astype(np.float64)
    classes, which = np.unique(labels, return_inverse=True)
    counts = np.bincount(which, minlength=len(classes))
    after_top1 = np.bincount(which, now, len(classes)) / counts
    before_top1 = np.bincount(which, before, len(classes)) / counts
    change = after_top1 - before_top1
    order = np.lexsort((classes, change))[:PER_CLASS_SHOWN]
    return {"classes": int(len(classes)), "shown": "the classes whose top-1 falls most (at most "
            f"{PER_CLASS_SHOWN})", "worst": [{"label": classes[i].item(), "queries": int(counts[i]),
                                              "baseline_top1": float(before_top1[i]),
                                              "top1": float(after_top1[i]), "change": float(change[i])}
                                             for i in order]}


def duplicate_clusters(query, ids: np.ndarray, dims: int) -> np.ndarray:
    """A cluster index per id in ``ids``: queries with byte-identical (first ``dims``) embeddings share one."""
    source = as_source(query)
    source = getattr(source, "_source", source)
    cluster_of_row: dict[bytes, int] = {}
    cluster_of_id = {}
    for block in source.iter_blocks(65536):
        matrix = np.ascontiguousarray(block.embeddings[:, :dims])
        for query_id, row in zip(block.ids.tolist(), matrix):
            cluster_of_id[query_id] = cluster_of_row.setdefault(row.tobytes(), len(cluster_of_row))
    found = np.array([cluster_of_id[i] for i in ids.tolist()], np.int64)
    _, dense = np.unique(found, return_inverse=True)
    return dense.reshape(-1)


def intervals(report: dict, candidate: QueryRecords, others: dict, *, level: float, seed: int, resamples: int,
              query, dims: int) -> dict:
    """Bootstrap intervals of every metric, and of diff / gap_closed / flip rates when they exist."""
    ids = candidate.ids
    for records in others.values():
        ids = _common(ids, records.ids)
    names = list(report["metrics"])
    columns = {f"candidate.{n}": candidate.values[n][_aligned(candidate, ids)] for n in names}
    for part, records in others.items():
        columns.update({f"{part}.{n}": records.values[n][_aligned(records, ids)] for n in names})
    statistics = {n: (lambda m, n=n: m[f"candidate.{n}"]) for n in names}
    if "baseline" in others:
        now = candidate.first_rank[_aligned(candidate, ids)] == 1
        before = others["baseline"].first_rank[_aligned(others["baseline"], ids)] == 1
        columns["negative"], columns["positive"] = (before & ~now).astype(float), (~before & now).astype(float)
        statistics.update({f"diff.{n}": (lambda m, n=n: m[f"candidate.{n}"] - m[f"baseline.{n}"]) for n in names})
        statistics.update(negative_flip_rate=lambda m: m["negative"], positive_flip_rate=lambda m: m["positive"])
    if len(others) == 2:
        statistics.update({f"gap_closed.{n}": (lambda m, n=n: (m[f"candidate.{n}"] - m[f"baseline.{n}"])
                                               / (m[f"ceiling.{n}"] - m[f"baseline.{n}"])) for n in names})
    result = bootstrap_intervals(columns, statistics, duplicate_clusters(query, ids, dims), level=level,
                                 resamples=resamples, seed=seed)
    result["queries"] = int(len(ids))
    return result
