"""`compatctl eval --index FACTORY`: the approximate-search path of eval (kept apart from cli/eval.py)."""

from __future__ import annotations

from compatctl.cli._util import console
from compatctl.errors import BadInputError

_EXACT_ONLY = ("sets", "plan", "backfill_with", "baseline", "baseline_gallery", "ceiling", "ceiling_gallery", "ci",
               "per_query", "summary_md", "qrels", "metrics", "plot", "order", "steps")


def run_approximate(given: dict, options: dict, json_path, fail_under, fail_over) -> None:
    """`eval --index FACTORY`: top-k through a faiss index and its recall against exact search (no mAP)."""
    from compatctl.cli.eval import _Opener, _show_report, _with_progress
    from compatctl.evaluate.approximate import evaluate_approximate
    from compatctl.evaluate.gates import check_gates, gate_names, parse_gates
    from compatctl.store import atomic_write_json

    if given["index"] is None:
        raise BadInputError("--nprobe goes with --index FACTORY (e.g. --index IVF1024,Flat --nprobe 16)")
    clash = [f"--{name.replace('_', '-')}" for name in _EXACT_ONLY if given[name] not in (None, [], False)]
    clash += ["--map-at-r"] if given["map_at_r"] else []
    if clash:
        raise BadInputError(f"{', '.join(clash)}: not with --index (they need the exact full ranking); drop "
                            f"{'them' if len(clash) > 1 else 'it'}, or drop --index")
    if given["query"] is None or given["gallery"] is None:
        raise BadInputError("give QUERY and GALLERY with --index")
    gates = parse_gates(fail_under, gate_names(options["topk"], with_map=False)) + \
        parse_gates(fail_over, gate_names(options["topk"], with_map=False), over=True)
    source = _Opener()
    report = _with_progress(lambda cb: evaluate_approximate(
        source(given["query"]), source(given["gallery"]), index=given["index"], nprobe=given["nprobe"],
        recall_queries=given["recall_queries"], seed=given["seed"], gallery_block=given["gallery_block"], progress=cb,
        **{k: v for k, v in options.items() if k != "map_at_r"}))
    _show_report(report)
    facts = report["approximate"]
    console.print(f"approximate: {facts['factory']}" + (f", nprobe {facts['nprobe']}" if facts["nprobe"] else "") +
                  f"; recall vs exact on {facts['recall_queries']} queries: " +
                  ", ".join(f"{name} {100 * value:.2f} %" for name, value in facts["recall_vs_exact"].items()) +
                  f"; index built in {facts['build_s']:.2f} s, searched in {facts['search_s']:.2f} s", highlight=False)
    if json_path:
        atomic_write_json(json_path, report)
    check_gates(report, gates)
