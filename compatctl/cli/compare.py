"""`compatctl compare`: every way to ship an embedding update, measured side by side, with a recommendation."""

from __future__ import annotations

from pathlib import Path

import typer

from compatctl.cli._util import app, console, err_console, guard, make_progress, stage_reporter
from compatctl.errors import BadInputError


@app.command("compare")
@guard
def compare_cli(
    old: Path = typer.Option(..., "--old", help="OLD_TRAIN: old-model embeddings of the items to fit on."),
    new: Path = typer.Option(..., "--new", help="NEW_TRAIN: new-model embeddings of the same items (ids pair)."),
    old_test: Path = typer.Option(..., "--old-test", help="OLD_TEST: old-model embeddings of the evaluation items "
                                  "(queries and gallery, leave-one-out)."),
    new_test: Path = typer.Option(..., "--new-test", help="NEW_TEST: new-model embeddings of the same items."),
    out: Path = typer.Option(..., "--out", help="Folder for report.json, report.md, strategies.png and the two "
                             "fitted transforms (forward.safetensors, query.safetensors)."),
    compatible: list[str] = typer.Option([], "--compatible", help="NAME=EMB, repeatable: test-item queries from a "
                                         "compatible (BCT/BT²) model, evaluated against OLD_TEST."),
    side_info: Path | None = typer.Option(None, "--side-info", help="Side-info of the train items (forward "
                                          "transform only); needs --side-info-test."),
    side_info_test: Path | None = typer.Option(None, "--side-info-test", help="Side-info of the test items."),
    kind: str = typer.Option("auto", "--kind", help="Transform kind of both fits: auto, linear, procrustes, mlp."),
    rerank_depth: str = typer.Option("10,50,200", "--rerank-depth", help="Re-ranking depths K."),
    budgets: str = typer.Option("0.1,0.2,0.5", "--budgets", help="Partial-backfill budgets (multiples of 1/--steps)."),
    steps: int = typer.Option(10, "--steps", help="Backfill curve steps used to pick the best order."),
    target: float = typer.Option(0.9, "--target", help="Gap closed (top-1 and mAP) the recommendation asks for."),
    distance: str = typer.Option("cosine", "--distance", help="cosine or l2."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random backfill order."),
    threads: int | None = typer.Option(None, "--threads", help="torch threads for an mlp fit (default: torch's)."),
) -> None:
    """Measure every way to ship an update and recommend one: old model as is, compatible models,
    forward transform (h: old -> new on the gallery), query transform (g: new -> old on the
    queries), re-ranking (g's top-K re-scored with new rows), partial backfill at a few budgets
    with the best order, full backfill. Each row: top-1, top-5, mAP, gap closed, cost (rows
    re-embedded by the new model, gallery rows rewritten, query-time work).

    Recommendation: the old model when new/new beats old/old on neither top-1 nor mAP; else the
    cheapest strategy whose gap closed reaches --target on top-1 and mAP (fewest rows re-embedded,
    then fewest rows rewritten, then least query-time work); else full backfill.

    Example: compatctl compare --old emb/old-train --new emb/new-train --old-test emb/old-test
    --new-test emb/new-test --compatible bt2=emb/bt2-test --out compare/
    """
    from compatctl.store.outputs import Output, claim_outputs
    from compatctl.strategies import compare_strategies, write_outputs

    named = _parse_named(compatible)
    if (side_info is None) != (side_info_test is None):
        raise BadInputError("--side-info and --side-info-test go together (side-info of the train and of the test items)")
    claim_outputs([Output(out, "compare", "--out")], inputs=[old, new, old_test, new_test, side_info, side_info_test,
                                                             *named.values()])
    out.mkdir(parents=True, exist_ok=True)
    with make_progress() as progress:
        report = compare_strategies(old_train=old, new_train=new, old_test=old_test, new_test=new_test, out=out,
                                    compatible=named, side_info=side_info, side_info_test=side_info_test, kind=kind,
                                    depths=rerank_depth.split(","), budgets=_floats(budgets, "--budgets"),
                                    target=target, distance=distance, steps=steps, seed=seed, threads=threads,
                                    progress=stage_reporter(progress, unit=None))
    written = write_outputs(report, out)
    _show(report)
    if report.get("plot_note"):
        err_console.print(f"note: {report['plot_note']}", highlight=False)
    console.print(f"wrote {', '.join(str(out / name) for name in written)} ({report['elapsed_s']:.1f} s)",
                  highlight=False, soft_wrap=True)


def _parse_named(specs: list[str]) -> dict[str, Path]:
    named = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise BadInputError(f"--compatible {spec!r}: expected NAME=EMB, e.g. --compatible bt2=emb/bt2-test")
        if name in named:
            raise BadInputError(f"--compatible {name}: given twice; use one NAME per model")
        named[name.strip()] = Path(path.strip())
    return named


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadInputError(f"{option} {text!r}: expected comma-separated fractions, e.g. 0.1,0.2,0.5") from None


def _show(report: dict) -> None:
    from rich.table import Table

    table = Table(title="ways to ship the update (test split, leave-one-out; report.md has the cost details)")
    for column in ("strategy", "top-1 %", "mAP %", "gap top-1", "gap mAP", "re-embedded"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in report["strategies"]:
        gap = row["gap_closed"]
        table.add_row(row["name"], f"{100 * row['metrics']['top1']:.2f}", f"{100 * row['metrics']['map']:.2f}",
                      *("–" if gap[m] is None else f"{gap[m]:.2f}" for m in ("top1", "map")),
                      f"{100 * row['cost']['rows_reembedded_fraction']:.1f} %")
    console.print(table)
    rec = report["recommendation"]
    console.print(f"recommendation: [bold]{rec['strategy']}[/] — {rec['why']}", highlight=False, soft_wrap=True)
    console.print(f"rule: {rec['rule']}", highlight=False, soft_wrap=True)
