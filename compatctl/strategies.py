"""`compare_strategies`: every way to ship an embedding update, measured side by side.

From an update's embeddings (old and new model on a train split to fit on, and on a test split
that serves as queries and gallery, leave-one-out by id) it fits what it needs and evaluates:

| strategy | queries | gallery | rows re-embedded by the new model |
| --- | --- | --- | --- |
| old model as is | old | old | 0 |
| compatible model NAME (BCT/BT²) | NAME | old | 0 |
| forward transform (FCT) | new | h(old) for every row | 0 (every row rewritten by h) |
| query transform | g(new) | old (untouched) | 0 |
| re-ranking at depth K | g(new), then new | old, then new rows of the K candidates | distinct candidates |
| partial backfill at budget B (best order) | new | h(old), B of the rows new | B · N |
| full backfill | new | new | N |

h is fitted old -> new, g new -> old (``fit_transform`` both ways, written to ``--out``). Gap
closed = (M − M(old/old)) / (M(new/new) − M(old/old)). The recommendation is the cheapest
strategy that closes at least ``target`` of the gap on top-1 and on mAP (RECOMMENDATION_RULE).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store import EmbeddingBlock, IdIndex, open_embeddings

METRICS = ("top1", "top5", "map")
RECOMMENDATION_RULE = ("the old model as is when new/new beats old/old on neither top-1 nor mAP; else the cheapest "
                       "strategy whose gap closed reaches {target:g} on top-1 and on mAP; cost order: fewest rows re-embedded by the new model, then fewest gallery rows rewritten by a transform, "
                       "then least extra query-time work (a query transform, then re-ranking depth); when none "
                       "reaches it, full backfill")
OUTPUT_FILES = ("report.json", "report.md", "strategies.png", "forward.safetensors", "query.safetensors")


def _ids(source) -> np.ndarray:
    from compatctl.evaluate.sources import column_values

    return np.asarray(column_values(source, "ids"))


def check_pairing(reference, others: dict[str, object], reference_option: str) -> None:
    """Every set in ``others`` must hold exactly the ids of ``reference`` (BadInputError naming how many differ)."""
    wanted = _ids(reference)
    for option, source in others.items():
        ids = _ids(source)
        if ids.dtype.kind in "US" and wanted.dtype.kind not in "US" or \
                wanted.dtype.kind in "US" and ids.dtype.kind not in "US":
            raise BadInputError(f"{option} {source.path}: text ids, but {reference_option} {reference.path} has "
                                "integer ids (or the reverse); both must embed the same items with the same ids")
        missing, extra = np.setdiff1d(wanted, ids), np.setdiff1d(ids, wanted)
        if len(missing) or len(extra):
            example = (missing if len(missing) else extra)[:3].tolist()
            raise BadInputError(f"{option} {source.path}: its ids do not pair with {reference_option} "
                                f"{reference.path}: {len(missing)} of its ids are missing and {len(extra)} are extra "
                                f"(e.g. {example}); both must embed the same items with the same ids")


def _gap(metrics: dict, baseline: dict, ceiling: dict) -> dict:
    return {name: None if ceiling[name] == baseline[name] else
            (metrics[name] - baseline[name]) / (ceiling[name] - baseline[name]) + 0.0 for name in METRICS}


def _row(name: str, family: str, metrics: dict, *, reembedded: int, rewritten: int, rows: int,
         query_work: str, extra_scores: int = 0, query_transform: bool = False, **extra) -> dict:
    cost = {"rows_reembedded": int(reembedded), "rows_reembedded_fraction": reembedded / max(rows, 1),
            "rows_rewritten_by_transform": int(rewritten), "query_transform": query_transform,
            "extra_scores_per_query": int(extra_scores), "query_time": query_work}
    return {"name": name, "family": family, "metrics": {m: float(metrics[m]) for m in METRICS}, "cost": cost, **extra}


def _cost_key(row: dict) -> tuple:
    cost = row["cost"]
    return (cost["rows_reembedded"], cost["rows_rewritten_by_transform"], cost["query_transform"],
            cost["extra_scores_per_query"])


def recommend(strategies: list[dict], target: float) -> dict:
    """The cheapest strategy reaching ``target`` gap closed on top-1 and mAP (RECOMMENDATION_RULE).

    ``strategies[0]`` is the old model as is; one row has family "full backfill".
    """
    reaching = [row for row in strategies if all(row["gap_closed"][m] is not None and row["gap_closed"][m] >= target
                                                 for m in ("top1", "map"))]
    full = next(row for row in strategies if row["family"] == "full backfill")
    if all(full["gap_closed"][m] is None or full["metrics"][m] <= row_metric for m, row_metric in
           ((m, strategies[0]["metrics"][m]) for m in ("top1", "map"))):
        return {"strategy": strategies[0]["name"], "rule": RECOMMENDATION_RULE.format(target=target),
                "target_gap_closed": target, "why": "the new model beats the old one on neither top-1 nor mAP "
                "(new/new <= old/old): there is no gain to ship", "candidates_reaching_target": []}
    chosen = min(reaching, key=_cost_key) if reaching else full
    why = (f"closes {chosen['gap_closed']['top1']:.2f} of the top-1 gap and {chosen['gap_closed']['map']:.2f} of the "
           f"mAP gap at the lowest cost among {len(reaching)} strategies reaching {target:g}") if reaching else \
        f"no strategy short of a full backfill closes {target:g} of the gap on both top-1 and mAP"
    return {"strategy": chosen["name"], "rule": RECOMMENDATION_RULE.format(target=target), "target_gap_closed": target,
            "why": why, "candidates_reaching_target": [row["name"] for row in reaching]}


class _Timer:
    """Seconds per step (the report's ``timings_s``); each finished step is reported to ``progress``."""

    def __init__(self, progress=None):
        self.started, self.steps, self.progress = time.perf_counter(), {}, progress

    def step(self, name: str, since: float) -> float:
        now = time.perf_counter()
        self.steps[name] = round(now - since, 3)
        if self.progress is not None:
            self.progress(name, 1, 1)
        return now


def _fit(first, second, out: Path, kind: str, *, uncertainty: bool, side_info=None, threads=None):
    from compatctl.transform import TransformConfig, fit_transform, load_transform

    config = TransformConfig(kind=kind, uncertainty=uncertainty and kind in ("mlp", "auto"), threads=threads)
    report = fit_transform(first, second, out, side_info_path=side_info, config=config)
    return load_transform(out), report


def _side_info_rows(path, ids: np.ndarray) -> np.ndarray:
    """The side-info rows of ``ids`` (BadInputError naming how many are missing)."""
    block = open_embeddings(path).read_all()
    rows, found = IdIndex(block.ids).locate(ids)
    if not found.all():
        raise BadInputError(f"--side-info-test {path}: lacks {int((~found).sum())} ids of --old-test (e.g. "
                            f"{ids[~found][:3].tolist()}); it must hold the side-info of every test item")
    return block.embeddings[rows]


def _forward_gallery(transform, old_test, side_info_test) -> EmbeddingBlock:
    old = old_test.read_all()
    side = None if side_info_test is None else _side_info_rows(side_info_test, old.ids)
    mapped, log_var = transform.apply(old.embeddings, side)
    return EmbeddingBlock(mapped, old.ids, old.labels, uncertainty=log_var)


def _curves(new_test, gallery: EmbeddingBlock, options: dict, steps: int, seed: int) -> dict:
    """Backfill curves of every order usable without new embeddings; {order: curve}."""
    from compatctl.evaluate import backfill_curve

    orders = ["random", "norm"] + (["uncertainty"] if gallery.uncertainty is not None else [])
    return {order: backfill_curve(new_test, gallery, new_test, order=order, steps=steps, seed=seed,
                                  **options)["curve"] for order in orders}


def _best_order(curves: dict) -> str:
    return max(curves, key=lambda order: (curves[order]["auc"]["top1"], curves[order]["auc"]["map"]))


def compare_strategies(*, old_train, new_train, old_test, new_test, out: Path, compatible: dict | None = None,
                       side_info=None, side_info_test=None, kind: str = "auto", depths=(10, 50, 200),
                       budgets=(0.1, 0.2, 0.5), target: float = 0.9, distance: str = "cosine", steps: int = 10,
                       seed: int = 0, threads: int | None = None, progress=None) -> dict:
    """Fit both transforms, evaluate every strategy, recommend one; returns the report (see module doc).

    Args:
        old_train, new_train: paths of the old/new embeddings of the items to fit on (ids pair).
        old_test, new_test: paths of the old/new embeddings of the evaluation items (same ids).
        out: the folder the transforms go to (``forward.safetensors``, ``query.safetensors``).
        compatible: NAME -> path of a compatible model's embeddings of the test items.
        side_info, side_info_test: side-info of the train and test items (forward transform only).
        kind: transform kind of both fits (``auto`` by default).
        depths, budgets: re-ranking depths; partial-backfill budgets (multiples of 1/steps).
        target: the gap closed the recommendation asks for.
        steps: points of the backfill curves that choose the best order (AUC over steps + 1 points).
    Raises:
        BadInputError: ids that do not pair, a budget that is not a curve point, the evaluations' errors.
    """
    from compatctl.evaluate import evaluate
    from compatctl.evaluate.query_transform import TransformedQueries
    from compatctl.evaluate.rerank import parse_depths, rerank

    depths = parse_depths(list(depths))
    budgets = _check_budgets(budgets, steps)
    timer, since = _Timer(progress), time.perf_counter()
    sets = {"--old-test": open_embeddings(old_test), "--new-test": open_embeddings(new_test)}
    named = {f"--compatible {name}": open_embeddings(path) for name, path in (compatible or {}).items()}
    check_pairing(sets["--old-test"], {"--new-test": sets["--new-test"], **named}, "--old-test")
    check_pairing(open_embeddings(old_train), {"--new": open_embeddings(new_train)}, "--old")
    old, new = sets["--old-test"], sets["--new-test"]
    options = dict(distance=distance, topk=(1, 5))
    rows = int(old.rows)
    since = timer.step("open and pair", since)
    forward, forward_fit = _fit(old_train, new_train, Path(out) / "forward.safetensors", kind, uncertainty=True,
                                side_info=side_info, threads=threads)
    since = timer.step("fit forward transform", since)
    query_side, query_fit = _fit(new_train, old_train, Path(out) / "query.safetensors", kind, uncertainty=False,
                                 threads=threads)
    since = timer.step("fit query transform", since)
    baseline = evaluate(old, old, **options)["metrics"]
    ceiling = evaluate(new, new, **options)["metrics"]
    strategies = [_row("old model as is", "old model", baseline, reembedded=0, rewritten=0, rows=rows,
                       query_work="old model queries")]
    for option, source in named.items():
        dims, note = _compatible_dims(source, old)
        strategies.append(_row(f"compatible model {option.split(' ', 1)[1]}", "compatible model",
                               evaluate(source, old, dims=dims, **options)["metrics"], reembedded=0, rewritten=0,
                               rows=rows, query_work="the compatible model's queries", dims=note))
    gallery = _forward_gallery(forward, old, side_info_test)
    strategies.append(_row(f"forward transform ({forward.kind})", "forward transform",
                           evaluate(new, gallery, **options)["metrics"], reembedded=0, rewritten=rows, rows=rows,
                           query_work="new model queries"))
    mapped = TransformedQueries(new, query_side)
    strategies.append(_row(f"query transform ({query_side.kind})", "query transform",
                           evaluate(mapped, old, **options)["metrics"], reembedded=0, rewritten=0, rows=rows,
                           query_transform=True, query_work="new model queries + the query transform"))
    since = timer.step("evaluate old, new, compatible and both transforms", since)
    strategies += _rerank_rows(rerank(new, old, new, depths=depths, first_stage_query=mapped, **options)["rerank"],
                               rows)
    since = timer.step("re-ranking", since)
    curves = _curves(new, gallery, options, steps, seed)
    best = _best_order(curves)
    strategies += _backfill_rows(curves[best], best, budgets, steps, rows)
    since = timer.step("backfill curves", since)
    strategies.append(_row("full backfill", "full backfill", ceiling, reembedded=rows, rewritten=0, rows=rows,
                           query_work="new model queries"))
    for row in strategies:
        row["gap_closed"] = _gap(row["metrics"], baseline, ceiling)
    report = {"strategies": strategies, "recommendation": recommend(strategies, target),
              "baseline": baseline, "ceiling": ceiling, "distance": distance,
              "protocol": "the test split is queries and gallery; a query's own id is left out (leave-one-out)",
              "gap_closed_rule": "(M - M(old/old)) / (M(new/new) - M(old/old))",
              "transforms": {"forward": _fit_record(forward_fit), "query": _fit_record(query_fit)},
              "partial_backfill": {"best_order": best, "steps": steps, "rule": "best order = highest AUC top-1, "
                                   "then AUC mAP, among the orders usable without new embeddings",
                                   "auc": {order: curve["auc"] for order, curve in curves.items()},
                                   "curves": {order: {k: curve[k] for k in ("fractions", "backfilled_rows", *METRICS)}
                                              for order, curve in curves.items()}},
              "inputs": {"old": str(old_train), "new": str(new_train), "old_test": str(old_test),
                         "new_test": str(new_test), "compatible": {k: str(v) for k, v in (compatible or {}).items()},
                         "side_info": None if side_info is None else str(side_info), "test_rows": rows}}
    timer.step("report", since)
    report["timings_s"] = timer.steps
    report["elapsed_s"] = round(time.perf_counter() - timer.started, 3)
    return report


def _rerank_rows(reranked: dict, rows: int) -> list[dict]:
    """One strategy row per re-ranking depth (cost: the distinct candidates re-embedded, K scores per query)."""
    return [_row(f"re-ranking at depth {depth}", "re-ranking", {m: reranked["metrics"][m][i] for m in METRICS},
                 reembedded=reranked["rows_needed"][i], rewritten=0, rows=rows, query_transform=True,
                 extra_scores=depth, depth=depth, query_work=f"query transform, then {depth} new-model scores per query")
            for i, depth in enumerate(reranked["depths"])]


def _backfill_rows(curve: dict, order: str, budgets, steps: int, rows: int) -> list[dict]:
    """One strategy row per budget: the curve's point at that fraction (the rest of the rows hold h(old))."""
    found = []
    for budget in budgets:
        point = int(round(budget * steps))
        backfilled = curve["backfilled_rows"][point]
        found.append(_row(f"partial backfill {budget:.0%} ({order} order)", "partial backfill",
                          {m: curve[m][point] for m in METRICS}, reembedded=backfilled, rewritten=rows - backfilled,
                          rows=rows, query_work="new model queries", budget=budget, order=order))
    return found


def _compatible_dims(source, old) -> tuple[int | None, str]:
    """(dims to compare, why): all dims, the BT² prefix its lineage names, or the first min(D) dims."""
    from compatctl.evaluate.sources import prefix_lineage

    if source.dim == old.dim:
        return None, "all dims"
    lineage = prefix_lineage(source, old)
    narrow = min(source.dim, old.dim)
    return narrow, lineage or (f"first {narrow} dims of both (widths {source.dim} and {old.dim}, no BT² lineage "
                               "recorded: assumed to be a prefix)")


def _fit_record(fit: dict) -> dict:
    return {"out": fit["out"], "kind": fit["kind"], "requested_kind": fit["requested_kind"],
            "matched_pairs": fit["matched"], "seconds": fit["seconds"], "validation": fit.get("validation")}


def _check_budgets(budgets, steps: int) -> tuple[float, ...]:
    values = tuple(sorted({float(b) for b in budgets}))
    bad = [b for b in values if not 0 < b < 1 or abs(b * steps - round(b * steps)) > 1e-9]
    if bad or not values:
        raise BadInputError(f"--budgets {','.join(map(str, budgets))}: each budget must be a fraction strictly between "
                            f"0 and 1 and a multiple of 1/{steps} (a point of the backfill curve), e.g. 0.1,0.2,0.5")
    return values


def strategies_markdown(report: dict) -> str:
    """The strategies table, the recommendation and its rule, as Markdown."""
    base, ceil = report["baseline"], report["ceiling"]
    lines = ["# Ways to ship the update, side by side", "",
             f"old/old top-1 {100 * base['top1']:.2f} %, mAP {100 * base['map']:.2f} %; new/new top-1 "
             f"{100 * ceil['top1']:.2f} %, mAP {100 * ceil['map']:.2f} % ({report['inputs']['test_rows']} test items, "
             f"{report['distance']}, leave-one-out). Gap closed = {report['gap_closed_rule']}.", "",
             "| strategy | top-1 % | top-5 % | mAP % | gap closed top-1 | gap closed mAP | rows re-embedded | "
             "query-time work |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in report["strategies"]:
        gap = row["gap_closed"]
        cells = [row["name"], *(f"{100 * row['metrics'][m]:.2f}" for m in METRICS),
                 *("–" if gap[m] is None else f"{gap[m]:.2f}" for m in ("top1", "map")),
                 f"{row['cost']['rows_reembedded']} ({100 * row['cost']['rows_reembedded_fraction']:.1f} %)",
                 row["cost"]["query_time"]]
        lines.append("| " + " | ".join(cells) + " |")
    rec = report["recommendation"]
    backfill = report["partial_backfill"]
    aucs = ", ".join(f"{order} {100 * auc['top1']:.2f} / {100 * auc['map']:.2f}" for order, auc in backfill["auc"].items())
    lines += ["", f"**Recommendation: {rec['strategy']}** — {rec['why']}.", "", f"Rule: {rec['rule']}.", "",
              f"Backfill orders (AUC top-1 / mAP over {backfill['steps'] + 1} points): {aucs}; "
              f"{backfill['rule']}.", ""]
    if report.get("plot_note"):
        lines += [report["plot_note"], ""]
    return "\n".join(lines)


def plot_strategies(report: dict, path: Path) -> None:
    """Gap closed (top-1 and mAP) against the fraction of rows re-embedded, one point per strategy."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from compatctl.store import atomic_write_bytes

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
    for axis, metric in zip(axes[0], ("top1", "map")):
        for row in report["strategies"]:
            x, y = row["cost"]["rows_reembedded_fraction"], row["gap_closed"][metric]
            if y is None:
                continue
            axis.scatter([x], [y], s=25)
            axis.annotate(row["name"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.axhline(report["recommendation"]["target_gap_closed"], ls="--", color="grey", lw=0.8)
        axis.set_xlabel("fraction of gallery rows re-embedded by the new model")
        axis.set_ylabel(f"gap closed ({metric})")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=120)
    plt.close(figure)
    atomic_write_bytes(Path(path), image.getvalue())


def write_outputs(report: dict, out: Path) -> list[str]:
    """report.json, report.md and (with matplotlib) strategies.png in ``out``; returns the files written."""
    from compatctl.store import atomic_write_bytes, atomic_write_json

    out = Path(out)
    written = []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        report["plot_note"] = ("strategies.png not drawn: matplotlib is not installed (pip install "
                               "'compatctl[plot]')")
    else:
        plot_strategies(report, out / "strategies.png")
        written.append("strategies.png")
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "report.md", strategies_markdown(report).encode())
    return ["report.json", "report.md", *written]
