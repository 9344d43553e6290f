"""CI gates: ``--fail-under METRIC=VALUE`` parsed before any work, checked against a report."""

from __future__ import annotations

import re

from compatctl.errors import BadInputError, GateFailed

_GATE = re.compile(r"^\s*([A-Za-z][\w.]*)\s*=\s*(\S+)\s*$")


def gate_names(topk, *, with_map: bool = True, map_at_r: bool = False, curve: bool = False) -> list[str]:
    """Metric names a gate may name for this evaluation (curve AUCs as ``auc.<metric>``).

    The names are the ones the metric accumulator reports, so gates and reports cannot drift apart.
    """
    from compatctl.evaluate.ranking import MetricSums
    from compatctl.evaluate.retrieval import check_topk

    names = list(MetricSums(check_topk(topk), at_r=map_at_r, with_map=with_map).result())
    return names + [f"auc.{name}" for name in names] * curve


def parse_gates(specs: list[str], allowed: list[str]) -> list[tuple[str, float]]:
    """``["top1=0.45", "map=0.3"]`` -> [("top1", 0.45), ("map", 0.3)].

    Raises:
        BadInputError: not METRIC=VALUE, a metric this evaluation does not compute, or a value
            outside [0, 1] (metrics are fractions: write 0.45, not 45).
    """
    gates = []
    for spec in specs or []:
        match = _GATE.match(spec)
        if not match:
            raise BadInputError(f"--fail-under {spec!r}: expected METRIC=VALUE, e.g. top1=0.45")
        name, raw = match.groups()
        if name not in allowed:
            raise BadInputError(f"--fail-under {spec!r}: unknown metric {name!r}; this evaluation gives "
                                f"{', '.join(allowed)}")
        try:
            value = float(raw)
        except ValueError:
            raise BadInputError(f"--fail-under {spec!r}: {raw!r} is not a number; e.g. {name}=0.45") from None
        if not 0.0 <= value <= 1.0:
            raise BadInputError(f"--fail-under {spec!r}: metrics are fractions in [0, 1]; e.g. {name}=0.45")
        gates.append((name, value))
    return gates


def gate_values(report: dict) -> dict[str, float]:
    """The report's gateable numbers: ``metrics`` plus ``auc.<metric>`` of a curve."""
    values = dict(report.get("metrics", {}))
    for name, value in report.get("curve", {}).get("auc", {}).items():
        values[f"auc.{name}"] = value
    return values


def failed_gates(report: dict, gates: list[tuple[str, float]]) -> list[str]:
    """One line per gate the report misses (empty when all pass)."""
    values = gate_values(report)
    return [f"gate failed: {name} = {values[name]:.4f} < {threshold}" for name, threshold in gates
            if values[name] < threshold]


def check_gates(report: dict, gates: list[tuple[str, float]]) -> None:
    """Raise GateFailed (exit 1) listing every failed gate, one per line."""
    lines = failed_gates(report, gates)
    if lines:
        raise GateFailed("\n".join(lines))


def passed_gates_line(report: dict, gates: list[tuple[str, float]]) -> str:
    """One line naming every gate and its value, for a run where all passed (empty without gates)."""
    if not gates:
        return ""
    values = gate_values(report)
    return "gates passed: " + ", ".join(f"{name} = {values[name]:.4f} >= {threshold}" for name, threshold in gates)
