"""A Markdown summary of an eval report, for ``$GITHUB_STEP_SUMMARY`` or a pull-request comment."""

from __future__ import annotations


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _interval(ci: dict, name: str, scale: float = 100.0) -> str:
    low, high = ci.get("low", {}).get(name), ci.get("high", {}).get(name)
    return "–" if low is None or high is None else f"[{scale * low:.2f}, {scale * high:.2f}]"


def _metric_table(report: dict) -> list[str]:
    ci = report.get("ci", {})
    columns = ["metric", "candidate %"]
    columns += ["baseline %"] * ("baseline" in report) + ["ceiling %"] * ("ceiling" in report)
    columns += ["gap closed %"] * ("gap_closed" in report)
    if ci:
        columns += [f"{100 * ci['level']:g}% CI"] + [f"CI of Δ vs baseline"] * ("baseline" in report)
        columns += ["CI of gap closed"] * ("gap_closed" in report)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    for name, value in report["metrics"].items():
        cells = [f"`{name}`", _pct(value)]
        cells += [_pct(report[part][name]) for part in ("baseline", "ceiling", "gap_closed") if part in report]
        if ci:
            cells += [_interval(ci, name)] + [_interval(ci, f"diff.{name}")] * ("baseline" in report)
            cells += [_interval(ci, f"gap_closed.{name}")] * ("gap_closed" in report)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _flip_lines(report: dict) -> list[str]:
    if "flips" not in report:
        return []
    flips, ci = report["flips"], report.get("ci", {})
    lines = ["", f"**Flips at top-1** over {flips['matched_queries']} queries matched by id: "
             f"{flips['negative']} negative ({_pct(report['negative_flip_rate'])} %"
             + (f", CI {_interval(ci, 'negative_flip_rate')}" if ci else "") + f"), {flips['positive']} positive "
             f"({_pct(report['positive_flip_rate'])} %" + (f", CI {_interval(ci, 'positive_flip_rate')}" if ci else "")
             + ")."]
    worst = [row for row in report.get("per_class", {}).get("worst", []) if row["change"] < 0][:5]
    if worst:
        lines += ["", "Classes losing most top-1: " + ", ".join(
            f"`{row['label']}` {100 * row['change']:+.1f} pts ({row['queries']} queries)" for row in worst) + "."]
    return lines


def summary_markdown(report: dict, verdicts: list) -> str:
    """The report as Markdown: inputs, metric table, flips, interval method, gate verdicts.

    Args:
        report: an eval report (``evaluate`` or ``compare``).
        verdicts: (gate, value, passed) triples from ``gates.gate_verdicts``.
    """
    inputs = report["inputs"]
    failed = [v for v in verdicts if not v[2]]
    status = "no gates" if not verdicts else ("❌ gates failed" if failed else "✅ gates passed")
    lines = [f"### compatctl eval: {status}", "",
             f"Candidate `{inputs['query']['path']}` → `{inputs['gallery']['path']}`"]
    for part in ("baseline", "ceiling"):
        if part in report.get("comparison", {}):
            pair = report["comparison"][part]
            lines[-1] += f"; {part} `{pair['query']['path']}` → `{pair['gallery']['path']}`"
    lines += ["", *_metric_table(report), *_flip_lines(report)]
    if "ci" in report:
        lines += ["", f"Intervals: {report['ci']['method']}; {report['ci']['queries']} queries."]
    if verdicts:
        lines += ["", "| gate | verdict |", "|---|---|"]
        lines += [f"| `{gate.describe(value, ok)}` | {'pass' if ok else '**FAIL**'} |" for gate, value, ok in verdicts]
    return "\n".join(lines) + "\n"
