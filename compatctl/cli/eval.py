"""`compatctl eval`: retrieval metrics, backfill curves, compatibility matrices and CI gates.

Imports only numpy (and safetensors through the store) on this path: pipelines call eval many
times, so start-up matters; torch is never imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from compatctl.cli._engine import engine_option, ray_address_option, ray_settings_of, refuse_on_ray, workers_option
from compatctl.cli._util import app, console, err_console, guard, make_progress, stage_reporter
from compatctl.errors import BadInputError


@app.command("eval")
@guard
def eval_cli(
    query: Optional[Path] = typer.Argument(None, help="Query embeddings: an embedding set or .npz/.safetensors "
                                           "(omit with --set/--plan)."),
    gallery: Optional[Path] = typer.Argument(None, help="Gallery embeddings (omit with --set/--plan)."),
    distance: str = typer.Option("cosine", "--distance", help="cosine (normalised inner product) or l2 "
                                 "(raw Euclidean, no normalisation)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON (atomically)."),
    fail_under: list[str] = typer.Option([], "--fail-under", help="METRIC=VALUE gate, repeatable: exit 1 when "
                                         "METRIC < VALUE (fractions; metrics: topK, map, map_at_r, auc.<metric>)."),
    backfill_with: Optional[Path] = typer.Option(None, "--backfill-with", help="NEW_GALLERY: draw the backfill "
                                                 "curve from GALLERY to it (rows matched by id)."),
    order: Optional[str] = typer.Option(None, "--order", help="Backfill order: random (seeded), uncertainty "
                                        "(GALLERY's per-row uncertainty, highest first) or norm. Default random."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Curve steps N: metrics at N+1 evenly spaced "
                                        "fractions 0..1 (ends included). Default 20."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random order."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw the curve to this image (needs matplotlib)."),
    topk: str = typer.Option("1,5", "--topk", help="Comma-separated k of the CMC top-k metrics."),
    dims: Optional[int] = typer.Option(None, "--dims", help="Compare the first N dims (needed when the widths differ, "
                                       "unless BT² lineage says one is the other's prefix)."),
    map_at_r: bool = typer.Option(False, "--map-at-r", help="Also report mAP@R."),
    no_map: bool = typer.Option(False, "--no-map", help="Top-k only: one pass over the gallery, no mAP "
                                "(for very large galleries)."),
    sets: list[str] = typer.Option([], "--set", help="NAME=PATH, repeatable: compatibility matrix of every "
                                   "query-set × gallery-set pair (the first set is the reference 'old')."),
    series: bool = typer.Option(False, "--series", help="The --set sets are versions v1, v2, ... in update order: "
                                "also report, for every i < j, vj/vi against vi/vi, and P_compat, mean and min "
                                "gain (gate them as series.p_compat.top1, series.min_gain.map, ...)."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="YAML plan of the matrix: sets: {NAME: PATH}, "
                                        "reference: NAME."),
    query_block: int = typer.Option(2048, "--query-block", help="Query rows per block. Memory: about 12 bytes "
                                    "× query-block × gallery-block, plus 30 bytes per (query, positive) pair "
                                    "of a query block for mAP."),
    gallery_block: int = typer.Option(16384, "--gallery-block", help="Gallery rows per block (see --query-block)."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="OLD_QUERY: also evaluate the baseline "
                                            "(e.g. old/old) and report flips against it (queries matched by id)."),
    baseline_gallery: Optional[Path] = typer.Option(None, "--baseline-gallery", help="The baseline's gallery "
                                                    "(default: --baseline itself, leave-one-out)."),
    ceiling: Optional[Path] = typer.Option(None, "--ceiling", help="NEW_QUERY: also evaluate the ceiling "
                                           "(e.g. new/new); with --baseline, report gap_closed."),
    ceiling_gallery: Optional[Path] = typer.Option(None, "--ceiling-gallery", help="The ceiling's gallery "
                                                   "(default: --ceiling itself, leave-one-out)."),
    ci: Optional[float] = typer.Option(None, "--ci", help="LEVEL in (0, 1), e.g. 0.95: BCa bootstrap "
                                       "intervals over queries (1000 resamples, --seed; duplicated queries "
                                       "resampled as one cluster), paired with the baseline/ceiling by query id."),
    fail_over: list[str] = typer.Option([], "--fail-over", help="METRIC=VALUE gate, repeatable: exit 1 when "
                                        "METRIC > VALUE (e.g. negative_flip_rate=0.02)."),
    per_query: Optional[Path] = typer.Option(None, "--per-query", help="Write one JSON line per query (.jsonl): "
                                             "id, first relevant rank, AP, correct@1, flipped."),
    summary_md: Optional[Path] = typer.Option(None, "--summary-md", help="Write a Markdown report (.md) with "
                                              "the table, flips, intervals and gate verdicts "
                                              "(e.g. $GITHUB_STEP_SUMMARY)."),
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="Relevance judgments instead of labels: BEIR "
                                         "TSV (header query-id, corpus-id, score) or TREC (qid 0 docid rel)."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma-separated metrics to report: topK, "
                                          "map, map_at_r, ndcg@K, recall@K, mrr@K (default with --qrels: "
                                          "ndcg@10,recall@100,mrr@10,map)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Folder where the --baseline and --ceiling "
                                         "evaluations are kept and reused while their inputs (sha256), "
                                         "options and compatctl are unchanged; the candidate is always "
                                         "evaluated."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Column names of Parquet inputs (or .npy "
                                          "folders' metadata): embedding=vector,id=doc_id,label=cls."),
    index: Optional[str] = typer.Option(None, "--index", help="Approximate search through a faiss index built "
                                        "from this factory (HNSW32, IVF1024,Flat): top-k plus recall@k against "
                                        "exact search on a query sample; no mAP. Exact is the default."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="Inverted lists visited per query (IVF --index)."),
    recall_queries: int = typer.Option(1000, "--recall-queries", min=1, help="Queries (drawn with --seed) "
                                       "searched exactly too, for --index's recall@k."),
    engine: str = engine_option(),
    ray_address: Optional[str] = ray_address_option(),
    workers: Optional[int] = workers_option(),
    query_transform: Optional[Path] = typer.Option(None, "--query-transform", help="Map QUERY into GALLERY's "
                                                   "space first, streamed (a transform fit the other way round: "
                                                   "fit-transform NEW_EMB OLD_EMB)."),
    rerank_with: Optional[Path] = typer.Option(None, "--rerank-with", help="NEW_GALLERY: re-score each query's "
                                               "top-K first-stage rows with QUERY against these rows (by id)."),
    rerank_depth: Optional[str] = typer.Option(None, "--rerank-depth", help="K of --rerank-with, comma-separated "
                                               "for several (e.g. 10,50,200). Default 50."),
) -> None:
    """Exact top-k and full-ranking mAP of QUERY against GALLERY, leave-one-out by id.

    A gallery row with the query's id is never in that query's ranking. top-k: a hit when one
    of the k nearest rows has the query's label. mAP: average precision over the full ranking
    (every same-label row is a positive). Queries without any positive are skipped by every
    metric and counted. Ties: equal scores rank the smaller gallery id first, for top-k and mAP
    alike. Sets of different widths need --dims N, unless the wider one was embedded by a BT²
    model of the narrower one's model (its first dims are then compared).

    --backfill-with NEW_GALLERY reports the curve at N+1 fractions (--steps N) and its
    AUC = the plain mean of the metric at the N+1 points, fractions 0 and 1 included.

    --set NAME=PATH (2 or more, or --plan FILE) replaces QUERY and GALLERY: every set serves as
    queries and as gallery; a cross pair is marked compatible when it beats reference/reference.

    --baseline OLD_QUERY and --ceiling NEW_QUERY evaluate those pairs too (each gallery defaults
    to its query set) and report, per metric, gap_closed = (M − M_baseline) / (M_ceiling −
    M_baseline); with --baseline, negative/positive flip rates at top-1 (queries matched by id)
    and the classes that lose most. --ci LEVEL adds intervals by a BCa bootstrap (bias-corrected,
    accelerated percentiles) over queries (1000 resamples, --seed; byte-identical queries
    resampled together as one cluster), the same resampled
    queries for candidate, baseline and ceiling, so the interval of a difference (diff.M),
    of gap_closed and of the flip rates is paired. Gates may name any of these:
    gap_closed.top1, negative_flip_rate, ci_low.top1, ci_high.diff.map, ...

    --qrels FILE ranks a query set against a separate corpus set by relevance judgments (no
    row left out; gains = grades; trec_eval definitions of ndcg@K, recall@K, mrr@K, map).

    --index FACTORY (faiss: HNSW32, IVF1024,Flat with --nprobe N) searches a faiss index of the
    gallery instead: top-k only, plus recall@k of its neighbours against exact search on
    --recall-queries sampled queries. Exact stays the default: only it ranks the full gallery
    (mAP) and breaks ties by id, the same on every run.

    --query-transform T maps the queries into the gallery's space as they stream (T from
    `fit-transform NEW_EMB OLD_EMB`; dims and model fingerprints checked in that direction).
    --rerank-with NEW_GALLERY --rerank-depth 10,50: first stage as above, then each query's top-K
    rows are re-scored with QUERY against NEW_GALLERY's rows of those ids (equal scores: smaller
    id first; rows below K keep their places); per depth the metrics and rerank.rows_needed, the
    distinct gallery rows that need a new-model embedding.

    Exit codes: 0 ok, 1 a --fail-under/--fail-over gate failed, 2 bad usage or input.

    Example: compatctl eval runs/new/test_emb runs/old/test_emb --json report.json --fail-under top1=0.45

    Example: compatctl eval --set v1=v1/test --set v2=v2/test --set v3=v3/test --series
    --fail-under series.p_compat.top1=1

    Example: compatctl eval new/test h_old/test --baseline old/test --ceiling new/test --ci 0.95
    --fail-under gap_closed.top1=0.8 --fail-over negative_flip_rate=0.02 --summary-md summary.md
    """
    from compatctl.evaluate.gates import gate_names, gate_verdicts, parse_gates
    from compatctl.evaluate.intervals import check_level
    from compatctl.evaluate.records import parse_metrics
    from compatctl.store.outputs import Output, claim_outputs

    ray = ray_settings_of(engine, ray_address, workers, 0.0)
    if ray is not None:
        refuse_on_ray({"--set": sets, "--plan": plan, "--backfill-with": backfill_with, "--baseline": baseline,
                       "--ceiling": ceiling, "--ci": ci, "--per-query": per_query, "--qrels": qrels,
                       "--metrics": metrics})
    claim_outputs([Output(json_path, "report", "--json"), Output(plot, "plot", "--plot"),
                   Output(per_query, "per_query", "--per-query"), Output(summary_md, "summary", "--summary-md")],
                  inputs=[query, gallery, backfill_with, plan, baseline, baseline_gallery, ceiling, ceiling_gallery,
                          qrels, query_transform, rerank_with, *(spec.partition("=")[2] for spec in sets)])
    ways = dict(query_transform=query_transform, rerank_with=rerank_with, rerank_depth=rerank_depth)
    ks = _parse_topk(topk)
    _Opener.columns = _parse_columns(columns)
    options = dict(distance=distance, topk=ks, dims=dims, map_at_r=map_at_r, query_block=query_block)
    if index is not None or nprobe is not None:
        from compatctl.cli._eval_index import run_approximate

        return run_approximate(locals(), options, json_path, fail_under, fail_over)
    if sets or plan:
        if any(value is not None for value in ways.values()):
            raise BadInputError("--query-transform and --rerank-with apply to one QUERY GALLERY pair, not to --set/--plan")
        _check_matrix_usage(query, gallery, backfill_with, fail_under + fail_over, series)
        gates = _series_gates(fail_under, fail_over, with_map=not no_map) if series else []
        return _run_matrix(sets, plan, json_path, options, gallery_block=gallery_block, with_map=not no_map,
                           series=series, gates=gates)
    if series:
        raise BadInputError("--series reads the --set sets as versions in update order: pass --set v1=PATH --set v2=PATH ...")
    if query is None or gallery is None:
        raise BadInputError("give QUERY and GALLERY, or --set NAME=PATH (two or more) for a matrix")
    curve = _check_curve_usage(backfill_with, order, steps, plot, no_map)
    compared = dict(baseline=baseline, baseline_gallery=baseline_gallery, ceiling=ceiling,
                    ceiling_gallery=ceiling_gallery)
    _check_compare_usage(compared, ci, per_query, qrels, metrics, curve, no_map)
    if cache is not None and baseline is None and ceiling is None:
        raise BadInputError("--cache keeps the --baseline and --ceiling evaluations; give one of them, or drop --cache")
    _check_ways_usage(ways, compared, ci, per_query, summary_md, qrels, curve, no_map or map_at_r)
    if ray is not None and any(value is not None for value in ways.values()):
        raise BadInputError("--engine ray evaluates one plain QUERY GALLERY pair; drop --query-transform/--rerank-with "
                            "or run them with the default engine")
    named = parse_metrics(metrics) or (("ndcg@10", "recall@100", "mrr@10", "map") if qrels else ())
    allowed = gate_names(ks, with_map=not no_map, map_at_r=map_at_r, curve=curve, metrics=named,
                         baseline=baseline is not None, ceiling=ceiling is not None, ci=check_level(ci) is not None)
    gates = parse_gates(fail_under, allowed) + parse_gates(fail_over, allowed, over=True)
    if plot:
        from compatctl.evaluate.plot import require_matplotlib

        require_matplotlib()
    comparison = None
    if curve:
        report = _run_curve(query, gallery, backfill_with, order, steps, seed, options)
    elif ray is not None:
        from compatctl.engines.ray_eval import evaluate_on_ray

        report = _with_progress(lambda cb: evaluate_on_ray(query, gallery, settings=ray, with_map=not no_map,
                                                           gallery_block=gallery_block, progress=cb, **options))
    elif rerank_with is not None:
        report = _run_rerank(query, gallery, ways, options, gallery_block)
    else:
        comparison = _run_compare(query, gallery, compared, ci, seed, qrels, named, options, gallery_block, no_map,
                                  query_transform, cache)
        report = comparison.report
    gate_verdicts(report, gates)  # a gated value this run could not define (gap_closed) is bad input: say only that
    _show_report(report)
    _write_outputs(report, comparison, gates, json_path=json_path, plot=plot, per_query=per_query,
                   summary_md=summary_md)


def _write_outputs(report: dict, comparison, gates: list, *, json_path, plot, per_query, summary_md) -> None:
    """Write every asked-for output, then print the gate verdicts (GateFailed, exit 1, when one fails)."""
    from compatctl.evaluate.gates import check_gates, gate_verdicts, passed_gates_line
    from compatctl.store import atomic_write_bytes, atomic_write_json

    verdicts = gate_verdicts(report, gates)  # an undefined gated value is bad input: before any write
    if json_path:
        atomic_write_json(json_path, report)
    if plot:
        from compatctl.evaluate.plot import plot_curve

        plot_curve(report, plot)
    if per_query:
        import json

        lines = (json.dumps(row) + "\n" for row in comparison.per_query_rows())
        atomic_write_bytes(per_query, "".join(lines).encode())
    if summary_md:
        from compatctl.evaluate.summary import summary_markdown

        atomic_write_bytes(summary_md, summary_markdown(report, verdicts).encode())
    check_gates(report, gates)
    if gates:
        console.print(passed_gates_line(report, gates), highlight=False, soft_wrap=True)


def _check_compare_usage(compared: dict, ci, per_query, qrels, metrics, curve: bool, no_map: bool) -> None:
    given = [f"--{name.replace('_', '-')}" for name, value in compared.items() if value is not None]
    given += [flag for flag, value in (("--ci", ci), ("--per-query", per_query), ("--qrels", qrels),
                                       ("--metrics", metrics)) if value is not None]
    if given and curve:
        raise BadInputError(f"{', '.join(given)} apply to a plain eval, not to --backfill-with")
    if given and no_map:
        raise BadInputError(f"{given[0]} needs the full ranking; drop --no-map")


def _check_ways_usage(ways: dict, compared: dict, ci, per_query, summary_md, qrels, curve: bool, other: bool) -> None:
    if ways["rerank_depth"] is not None and ways["rerank_with"] is None:
        raise BadInputError("--rerank-depth needs --rerank-with NEW_GALLERY")
    if ways["query_transform"] is not None and curve:
        raise BadInputError("--query-transform applies to a plain eval, not to --backfill-with (its new rows live in "
                            "the new model's space)")
    if ways["rerank_with"] is None:
        return
    given = [f"--{name.replace('_', '-')}" for name, value in compared.items() if value is not None]
    given += [flag for flag, value in (("--ci", ci), ("--per-query", per_query), ("--summary-md", summary_md),
                                       ("--qrels", qrels), ("--backfill-with", curve or None),
                                       ("--no-map/--map-at-r", other or None)) if value is not None]
    if given:
        raise BadInputError(f"{', '.join(given)} cannot be combined with --rerank-with (use compatctl compare for "
                            "every way side by side)")


def _parse_topk(text: str) -> tuple[int, ...]:
    """``"1,5"`` -> (1, 5); the range rules are the library's (check_topk)."""
    from compatctl.evaluate.retrieval import check_topk

    try:
        return check_topk(tuple(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise BadInputError(f"--topk {text!r}: expected comma-separated whole numbers, e.g. 1,5") from None


def _check_matrix_usage(query, gallery, backfill_with, fail_under, series: bool = False) -> None:
    if query is not None or gallery is not None:
        raise BadInputError("--set/--plan name every embedding set: drop the QUERY/GALLERY arguments")
    if backfill_with is not None or (fail_under and not series):
        raise BadInputError("--backfill-with and --fail-under apply to one QUERY GALLERY pair, not to --set/--plan "
                            "(with --series, gates name the series metrics, e.g. series.p_compat.top1=1)")


def _series_gates(fail_under: list[str], fail_over: list[str], *, with_map: bool) -> list:
    from compatctl.evaluate.gates import parse_gates
    from compatctl.evaluate.series import series_gate_names

    allowed = series_gate_names(with_map)
    return parse_gates(fail_under, allowed) + parse_gates(fail_over, allowed, over=True)


def _check_curve_usage(backfill_with, order, steps, plot, no_map) -> bool:
    if backfill_with is None:
        given = [name for name, value in (("--order", order), ("--steps", steps), ("--plot", plot)) if value is not None]
        if given:
            raise BadInputError(f"{', '.join(given)} need --backfill-with NEW_GALLERY")
        return False
    if no_map:
        raise BadInputError("--no-map applies to a plain eval; the backfill curve always ranks fully")
    return True


def _with_progress(run):
    """Run ``run(progress_callback)`` under a progress bar on stderr when it is a terminal."""
    if not err_console.is_terminal:
        return run(None)
    with make_progress() as progress:
        return run(stage_reporter(progress, unit=None))


def _parse_columns(text):
    from compatctl.store.sources import parse_columns

    return parse_columns(text)


class _Opener:
    """Opens each path once: `eval X X --ceiling X` opens (and checksums) X once."""

    columns: dict = {}  # --columns, for Parquet inputs

    def __init__(self):
        self.opened: dict[Path, object] = {}

    def __call__(self, path: Path | None):
        from compatctl.store import open_embeddings

        if path is None:
            return None
        key = Path(path).resolve()
        if key not in self.opened:
            self.opened[key] = open_embeddings(path, self.columns)
        return self.opened[key]


def _transformed(source, query, gallery, transform_path):
    """QUERY's source, through --query-transform when given (warnings printed)."""
    if transform_path is None:
        return source(query)
    from compatctl.evaluate.query_transform import with_query_transform

    mapped, warnings = with_query_transform(source(query), transform_path, source(gallery))
    for warning in warnings:
        err_console.print(f"warning: {warning}", highlight=False, soft_wrap=True)
    return mapped


def _run_rerank(query, gallery, ways: dict, options: dict, gallery_block: int) -> dict:
    from compatctl.evaluate.rerank import parse_depths, rerank

    source = _Opener()
    depths = parse_depths(ways["rerank_depth"] or "50")
    first = _transformed(source, query, gallery, ways["query_transform"])
    settings = {k: v for k, v in options.items() if k != "map_at_r"}
    report = _with_progress(lambda cb: rerank(source(query), source(gallery), source(ways["rerank_with"]),
                                              depths=depths, first_stage_query=first, gallery_block=gallery_block,
                                              progress=cb, **settings))
    return _note_transform(report, first)


def _note_transform(report: dict, first) -> dict:
    if hasattr(first, "transform"):
        from compatctl.evaluate.query_transform import describe_query_transform

        report["query_transform"] = describe_query_transform(first.transform)
    return report


def _run_compare(query, gallery, compared, ci, seed, qrels, metrics, options, gallery_block, no_map,
                 query_transform=None, cache=None):
    from compatctl.evaluate.compare import compare

    source = _Opener()
    judged = None
    if qrels is not None:
        from compatctl.evaluate.qrels import read_qrels

        judged = read_qrels(qrels)
    sets = {name: source(path) for name, path in compared.items()}
    first = _transformed(source, query, gallery, query_transform)
    comparison = _with_progress(lambda cb: compare(first, source(gallery), ci=ci, seed=seed, qrels=judged,
                                                   metrics=metrics, with_map=not no_map, gallery_block=gallery_block,
                                                   progress=cb, cache_dir=cache, **sets, **options))
    _note_transform(comparison.report, first)
    return comparison


def _run_curve(query, gallery, backfill_with, order, steps, seed, options) -> dict:
    from compatctl.evaluate import backfill_curve

    source = _Opener()
    return _with_progress(lambda cb: backfill_curve(source(query), source(gallery), source(backfill_with),
                                                    order=order or "random", steps=20 if steps is None else steps,
                                                    seed=seed, progress=cb, **options))


def _run_matrix(sets, plan, json_path, options, *, gallery_block: int, with_map: bool, series: bool = False,
                gates: list = ()) -> None:
    from compatctl.evaluate.matrix import compatibility_matrix, load_plan, parse_sets
    from compatctl.store import atomic_write_json, open_embeddings

    named, reference = load_plan(plan) if plan else ({}, None)
    named.update(parse_sets(sets))
    sources = {name: open_embeddings(path, _Opener.columns) for name, path in named.items()}
    report = _with_progress(lambda cb: compatibility_matrix(sources, reference=reference, progress=cb,
                                                            gallery_block=gallery_block, with_map=with_map,
                                                            **options))
    if series:
        from compatctl.evaluate.series import series_metrics

        report["series"] = series_metrics(report["matrix"])
    _show_matrix(report)
    if series:
        _show_series(report["series"])
    if json_path:
        atomic_write_json(json_path, report)
    if gates:
        from compatctl.evaluate.gates import check_gates, passed_gates_line
        from compatctl.evaluate.series import series_gate_report

        check_gates(series_gate_report(report["series"]), gates)
        console.print(passed_gates_line(series_gate_report(report["series"]), gates), highlight=False, soft_wrap=True)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _show_report(report: dict) -> None:
    from rich.table import Table

    inputs = report["inputs"]
    # The title is its own line, never wrapped: rich would break it inside the file names.
    console.print(f"{inputs['query']['path']} → {inputs['gallery']['path']}", markup=False, highlight=False,
                  soft_wrap=True, style="italic")
    console.print(_metric_table(report))
    if "flips" in report:
        flips = report["flips"]
        console.print(f"flips at top-1 over {flips['matched_queries']} matched queries: {flips['negative']} negative "
                      f"({_pct(report['negative_flip_rate'])} %), {flips['positive']} positive "
                      f"({_pct(report['positive_flip_rate'])} %)", highlight=False)
    if "ci" in report:
        console.print(f"intervals: {report['ci']['method']}", highlight=False)
    if "curve" in report:
        _show_curve(report["curve"])
    if "rerank" in report:
        _show_rerank(report["rerank"])
    counts = report["counts"]
    console.print(f"distance {report['distance']}; dims: {report['dims']['note']}; {counts['queries']} queries, "
                  f"{counts['gallery']} gallery rows, {counts['left_out_self']} own rows left out, "
                  f"{counts['skipped_no_positive']} queries without positives skipped; "
                  f"{report['elapsed_s']:.2f} s", highlight=False)


def _metric_table(report: dict):
    """metric | % (| baseline | ceiling | gap closed) (| CI low–high), percentages."""
    from rich.table import Table

    parts = [part for part in ("baseline", "ceiling", "gap_closed") if part in report]
    ci = report.get("ci")
    table = Table()
    for column in ("metric", "%", *(part.replace("_", " ") + " %" for part in parts),
                   *([f"{100 * ci['level']:g}% CI"] if ci else [])):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value in report["metrics"].items():
        cells = [_pct(report[part][name]) if report[part][name] is not None else "–" for part in parts]
        if ci:
            low, high = ci["low"].get(name), ci["high"].get(name)
            cells.append("–" if low is None else f"{_pct(low)}–{_pct(high)}")
        table.add_row(name, _pct(value), *cells)
    return table


def _show_curve(curve: dict) -> None:
    from rich.table import Table

    names = list(curve["auc"])
    table = Table(title=f"backfill curve ({curve['order']} order, {curve['steps']} steps)")
    for column in ("fraction", "rows", *names):
        table.add_column(column, justify="right")
    for index, fraction in enumerate(curve["fractions"]):
        table.add_row(f"{fraction:.3f}", str(curve["backfilled_rows"][index]),
                      *(_pct(curve[name][index]) for name in names))
    table.add_row("AUC", "mean", *(_pct(curve["auc"][name]) for name in names), style="bold")
    console.print(table)
    console.print(curve["auc_rule"], highlight=False)


def _show_rerank(rerank: dict) -> None:
    from rich.table import Table

    names = list(rerank["metrics"])
    table = Table(title="re-ranked with --rerank-with (first stage: the table above)")
    for column in ("depth K", "rows needed", "% of gallery", *(f"{name} %" for name in names)):
        table.add_column(column, justify="right")
    for i, depth in enumerate(rerank["depths"]):
        table.add_row(str(depth), str(rerank["rows_needed"][i]), _pct(rerank["rows_needed_fraction"][i]),
                      *(_pct(rerank["metrics"][name][i]) for name in names))
    console.print(table)


def _show_matrix(report: dict) -> None:
    from rich.table import Table

    matrix = report["matrix"]
    shown = [m for m in ("top1", "map") if m in matrix["pairs"][0]["metrics"]] or list(matrix["pairs"][0]["metrics"])[:1]
    table = Table(title=f"compatibility matrix ({' / '.join(shown)} %; rows: query set, columns: gallery set)")
    table.add_column("query \\ gallery")
    for name in matrix["sets"]:
        table.add_column(name, justify="right")
    cells = {(p["query"], p["gallery"]): p for p in matrix["pairs"]}
    for query_name in matrix["sets"]:
        table.add_row(query_name, *(_cell(cells[(query_name, g)], shown) for g in matrix["sets"]))
    console.print(table)
    console.print(f"reference: {matrix['reference']}; ✓/✗ {matrix['criterion']} (on {' and '.join(shown)})",
                  highlight=False)


def _cell(pair: dict, shown: list[str]) -> str:
    text = " / ".join(_pct(pair["metrics"][m]) for m in shown)
    if pair["compatible"] is None:
        return text
    ok = all(pair["compatible"].get(m, False) for m in shown)
    return f"{text} {'[green]✓[/]' if ok else '[red]✗[/]'}"


def _show_series(series: dict) -> None:
    """vj/vi against vi/vi for every i < j, then P_compat, mean and min gain per metric."""
    from rich.table import Table

    shown = series["metrics"]
    table = Table(title=f"series {' → '.join(series['order'])} ({' / '.join(shown)} %)")
    for column in ("newer / older", "newer/older", "older/older", "gain", ""):
        table.add_column(column, justify="left" if column == "newer / older" else "right")
    for pair in series["pairs"]:
        ok = all(pair["compatible"].values())
        table.add_row(f"{pair['newer']} / {pair['older']}", " / ".join(_pct(pair["cross"][m]) for m in shown),
                      " / ".join(_pct(pair["older_self"][m]) for m in shown),
                      " / ".join(f"{100 * pair['gain'][m]:+.2f}" for m in shown), "[green]✓[/]" if ok else "[red]✗[/]")
    console.print(table)
    for m in shown:
        console.print(f"{m}: P_compat {series['p_compat'][m]:.2f} of {len(series['pairs'])} pairs, mean gain "
                      f"{100 * series['mean_gain'][m]:+.2f}, min gain {100 * series['min_gain'][m]:+.2f} (points)",
                      highlight=False)
    console.print(f"✓/✗ {series['criterion']}", highlight=False)
