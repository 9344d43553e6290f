"""CI gates: ``--fail-under METRIC=VALUE`` / ``--fail-over METRIC=VALUE`` parsed before any work,
checked against a report.

Gateable names: the metrics (``top1``, ``ndcg@10``, ...), ``auc.<metric>`` of a curve and, in a
comparison, ``baseline.<m>``, ``ceiling.<m>``, ``gap_closed.<m>``, ``negative_flip_rate``,
``positive_flip_rate`` and interval bounds ``ci_low.<name>`` / ``ci_high.<name>`` of every
name the report's ``ci`` holds (``top1``, ``diff.top1``, ``gap_closed.top1``, the flip rates).
"""

from __future__ import annotations

import dataclasses
import math
import re

from compatctl.errors import BadInputError, GateFailed

_GATE = re.compile(r"^\s*([A-Za-z][\w.@]*)\s*=\s*(\S+)\s*$")
FLIP_RATES = ("negative_flip_rate", "positive_flip_rate")
_UNBOUNDED = ("gap_closed.", "diff.", "ci_low.gap_closed.", "ci_high.gap_closed.", "ci_low.diff.", "ci_high.diff.",
              "series.mean_gain.", "series.min_gain.")


@dataclasses.dataclass(frozen=True)
class Gate:
    """``name`` must stay >= ``threshold`` (``over=False``, --fail-under) or <= it (--fail-over)."""

    name: str
    threshold: float
    over: bool = False

    def fails(self, value: float) -> bool:
        return value > self.threshold if self.over else value < self.threshold

    def describe(self, value: float, passed: bool) -> str:
        sign = ("<=" if passed else ">") if self.over else (">=" if passed else "<")
        return f"{self.name} = {value:.4f} {sign} {self.threshold:g}"

    def __iter__(self):  # unpacks as (name, threshold), as gates did before --fail-over
        return iter((self.name, self.threshold))


def gate_names(topk, *, with_map: bool = True, map_at_r: bool = False, curve: bool = False,
               metrics: tuple[str, ...] = (), baseline: bool = False, ceiling: bool = False,
               ci: bool = False) -> list[str]:
    """Names a gate may name for this evaluation (see the module doc).

    The metric names are the ones the evaluation reports, so gates and reports cannot drift apart.
    """
    from compatctl.evaluate.ranking import MetricSums
    from compatctl.evaluate.retrieval import check_topk

    names = list(metrics) or list(MetricSums(check_topk(topk), at_r=map_at_r, with_map=with_map).result())
    allowed = names + [f"auc.{name}" for name in names] * curve
    interval = list(names)
    if baseline:
        allowed += [f"baseline.{name}" for name in names] + list(FLIP_RATES)
        interval += [f"diff.{name}" for name in names] + list(FLIP_RATES)
    if ceiling:
        allowed += [f"ceiling.{name}" for name in names]
    if baseline and ceiling:
        allowed += [f"gap_closed.{name}" for name in names]
        interval += [f"gap_closed.{name}" for name in names]
    if ci:
        allowed += [f"ci_{side}.{name}" for side in ("low", "high") for name in interval]
    return allowed


def parse_gates(specs: list[str], allowed: list[str], *, over: bool = False) -> list[Gate]:
    """``["top1=0.45", "map=0.3"]`` -> [Gate("top1", 0.45), Gate("map", 0.3)].

    Raises:
        BadInputError: not METRIC=VALUE, a metric this evaluation does not compute, or a value
            outside [0, 1] (metrics are fractions: write 0.45, not 45; gap_closed and diff may
            be any number).
    """
    option = "--fail-over" if over else "--fail-under"
    gates = []
    for spec in specs or []:
        match = _GATE.match(spec)
        if not match:
            raise BadInputError(f"{option} {spec!r}: expected METRIC=VALUE, e.g. top1=0.45")
        name, raw = match.groups()
        if name not in allowed:
            raise BadInputError(f"{option} {spec!r}: unknown metric {name!r}; this evaluation gives "
                                f"{', '.join(allowed)}")
        try:
            value = float(raw)
        except ValueError:
            raise BadInputError(f"{option} {spec!r}: {raw!r} is not a number; e.g. {name}=0.45") from None
        if not math.isfinite(value) or (not name.startswith(_UNBOUNDED) and not 0.0 <= value <= 1.0):
            raise BadInputError(f"{option} {spec!r}: metrics are fractions in [0, 1]; e.g. {name}=0.45")
        gates.append(Gate(name, value, over))
    return gates


def gate_values(report: dict) -> dict[str, float | None]:
    """The report's gateable numbers, flattened to the names of the module doc."""
    values = dict(report.get("metrics", {}))
    for name, value in report.get("curve", {}).get("auc", {}).items():
        values[f"auc.{name}"] = value
    for part in ("baseline", "ceiling", "gap_closed"):
        values.update({f"{part}.{name}": value for name, value in report.get(part, {}).items()})
    values.update({name: report[name] for name in FLIP_RATES if name in report})
    for side in ("low", "high"):
        values.update({f"ci_{side}.{name}": value for name, value in report.get("ci", {}).get(side, {}).items()})
    return values


def _as_gate(gate) -> Gate:
    return gate if isinstance(gate, Gate) else Gate(*gate)


def gate_verdicts(report: dict, gates: list) -> list[tuple[Gate, float, bool]]:
    """(gate, value, passed) per gate.

    Raises:
        BadInputError: a gated value the report could not compute (gap_closed when the ceiling
            equals the baseline, an interval of an undefined value).
    """
    values, verdicts = gate_values(report), []
    for gate in map(_as_gate, gates):
        value = values.get(gate.name)
        if value is None:
            raise BadInputError(f"gate {gate.name}: undefined for this run "
                                f"({report.get('undefined', {}).get(gate.name, 'not computed')}); drop this gate")
        verdicts.append((gate, value, not gate.fails(value)))
    return verdicts


def failed_gates(report: dict, gates: list) -> list[str]:
    """One line per gate the report misses (empty when all pass)."""
    return [f"gate failed: {gate.describe(value, False)}" for gate, value, ok in gate_verdicts(report, gates)
            if not ok]


def check_gates(report: dict, gates: list) -> None:
    """Raise GateFailed (exit 1) listing every failed gate, one per line."""
    lines = failed_gates(report, gates)
    if lines:
        raise GateFailed("\n".join(lines))


def passed_gates_line(report: dict, gates: list) -> str:
    """One line naming every gate and its value, for a run where all passed (empty without gates)."""
    if not gates:
        return ""
    return "gates passed: " + ", ".join(gate.describe(value, True) for gate, value, _ in gate_verdicts(report, gates))
