"""Series metrics over a compatibility matrix whose sets are versions v1, v2, ... in update order.

For a series of updates every newer model should be compatible with every older one (BT²,
Zhou et al. 2023, "a series of updates"; the multi-model criterion of universal backward-
compatible training). For every pair i < j:

- ``cross`` = M(vj queries, vi gallery): searching the older gallery with the newer model;
- ``older_self`` = M(vi, vi): not updating at all;
- ``gain`` = cross − older_self; the pair is *compatible* when gain > 0 (BCT's criterion).

Summaries per metric: ``p_compat`` (share of the n(n−1)/2 pairs that are compatible),
``mean_gain`` and ``min_gain``. Gates name them ``series.p_compat.top1``, ``series.mean_gain.map``,
``series.min_gain.top1``, ...: ``--fail-under series.p_compat.top1=1`` demands every pair.
"""

from __future__ import annotations

SUMMARIES = ("p_compat", "mean_gain", "min_gain")
CRITERION = "for every i < j: M(vj queries, vi gallery) > M(vi, vi)"


def series_metrics(matrix: dict) -> dict:
    """The series report of a ``compatibility_matrix`` report's ``matrix`` entry (sets in version order).

    Returns {"order", "criterion", "metrics", "pairs": [{"newer", "older", "cross", "older_self",
    "gain", "compatible"}], "p_compat", "mean_gain", "min_gain"} (dicts keyed by metric).
    """
    names = matrix["sets"]
    cells = {(pair["query"], pair["gallery"]): pair["metrics"] for pair in matrix["pairs"]}
    metrics = [m for m in ("top1", "map") if m in cells[(names[0], names[0])]] or \
        list(cells[(names[0], names[0])])[:1]
    pairs = []
    for j, newer in enumerate(names):
        for older in names[:j]:
            cross, own = cells[(newer, older)], cells[(older, older)]
            gain = {m: float(cross[m] - own[m]) for m in metrics}
            pairs.append({"newer": newer, "older": older, "cross": {m: float(cross[m]) for m in metrics},
                          "older_self": {m: float(own[m]) for m in metrics}, "gain": gain,
                          "compatible": {m: gain[m] > 0 for m in metrics}})
    count = max(len(pairs), 1)
    return {"order": list(names), "criterion": CRITERION, "metrics": metrics, "pairs": pairs,
            "p_compat": {m: sum(p["compatible"][m] for p in pairs) / count for m in metrics},
            "mean_gain": {m: sum(p["gain"][m] for p in pairs) / count for m in metrics},
            "min_gain": {m: min(p["gain"][m] for p in pairs) for m in metrics}}


def series_gate_names(with_map: bool = True) -> list[str]:
    """Names a gate on a series may use."""
    metrics = ("top1", "map") if with_map else ("top1",)
    return [f"series.{summary}.{m}" for summary in SUMMARIES for m in metrics]


def series_gate_report(series: dict) -> dict:
    """The series summaries flattened as a report that ``gates.gate_verdicts`` reads."""
    return {"metrics": {f"series.{summary}.{m}": series[summary][m] for summary in SUMMARIES
                        for m in series["metrics"]}}
