"""`compatctl demo`: the whole model update on built-in data, in one command."""

from pathlib import Path

import typer

from compatctl.cli._util import app, console, err_console, guard, make_progress, shell_command, stage_reporter


@app.command("demo")
@guard
def demo_cli(
    out: Path = typer.Option(Path("compatctl-demo"), "--out", help="Folder for the demo's artifacts (replaced "
                             "if an earlier demo made it)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller run (fewer classes, images and epochs)."),
    series: bool = typer.Option(False, "--series", help="A series of updates v1 → v2 → v3 (first 40 %, 70 %, all "
                                "classes) with BT² and BCT: matrices, series metrics, chain vs direct transform."),
) -> None:
    """Train old and new models (independent, BCT, BT²), fit transforms, backfill and evaluate.

    Runs offline on the built-in generated images, in 30-60 s on 2 CPU cores, and
    prints one table: old/old; per method new/new and new/old; new/h(old); backfill-curve AUCs.
    Every artifact in --out is real: inspect it, evaluate it, backfill it.

    `--series` runs three updates instead (compatctl/demo_series.py, about 2 minutes; 7 models).

    Example: compatctl demo --out compatctl-demo
    """
    from compatctl.demo import QUICK, DemoSettings, run_demo, summary_rows
    from compatctl.store.outputs import Output, claim_outputs

    claim_outputs([Output(out, "demo")])
    if series:
        return _series_demo(out, QUICK if quick else DemoSettings())
    with make_progress() as progress:
        report = run_demo(out, settings=QUICK if quick else DemoSettings(),
                          progress=stage_reporter(progress, unit=None))
    print_summary(report, out, summary_rows(report))


def print_summary(report: dict, out: Path, rows: list[tuple[str, str, str, str]]) -> None:
    from rich.table import Table

    table = Table(title=f"compatctl demo — {report['settings']['data']} ({report['seconds']:.0f} s)")
    for column in ("case (query/gallery)", "top-1", "mAP", "note"):
        table.add_column(column, justify="right" if column in ("top-1", "mAP") else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if report.get("plot") is None:
        err_console.print("backfill_curve.png not drawn: install matplotlib (pip install 'compatctl[plot]')")
    console.print(f"\nArtifacts in [bold]{out}[/]: report.json, backfill_curve.png, models, embeddings, transforms.")
    console.print("Next, try:")
    for command in next_commands(out):
        console.print(shell_command(command), markup=False, highlight=False, soft_wrap=True)


def next_commands(out: Path) -> list[list[str]]:
    """The commands the demo suggests next, as argument lists, on its own artifacts."""
    emb = out / "emb"
    return [["compatctl", "inspect", out / "bt2" / "model.safetensors"],
            ["compatctl", "eval", emb / "bt2-test", emb / "old-test", "--fail-under", "top1=0.3"],
            ["compatctl", "backfill", emb / "old-test", "--transform", out / "transforms" / "mlp.safetensors",
             "--out", emb / "backfilled", "--budget", "0.3", "--order", "uncertainty",
             "--new-embeddings", emb / "independent-test"],
            ["compatctl", "eval", emb / "independent-test", emb / "h_mlp-test", "--backfill-with",
             emb / "independent-test", "--order", "uncertainty", "--steps", "10"]]


def _series_demo(out: Path, settings) -> None:
    """Run the series demo; print each method's matrix and series table, then chain vs direct."""
    from rich.table import Table

    from compatctl.cli.eval import _show_matrix, _show_series
    from compatctl.demo_series import run_series_demo

    with make_progress() as progress:
        report = run_series_demo(out, settings=settings, progress=stage_reporter(progress, unit=None))
    for method, result in report["series"].items():
        console.print(f"\n[bold]{method}[/]: v1 → {method} v2 → {method} v3 ({report['settings']['data']})")
        _show_matrix(result)
        _show_series(result["series"])
        for version, versus in result["versus_independent"].items():
            console.print(f"{version}/{version} top-1 {versus['top1']:.3f} = {versus['ratio']:.3f} × independent "
                          f"{version} ({versus['independent_top1']:.3f})", highlight=False)
    table = Table(title="forward transforms on the independent models: chain vs direct (v1 test gallery)")
    for column in ("case (query/gallery)", "top-1", "mAP", "gap closed (top-1)"):
        table.add_column(column, justify="left" if column.startswith("case") else "right")
    for case, metrics in report["transforms"].items():
        gap = metrics.get("gap_closed_top1")
        table.add_row(case, f"{metrics['top1']:.3f}", f"{metrics['map']:.3f}", "" if gap is None else f"{gap:.2f}")
    console.print(table)
    console.print(f"{report['seconds']:.0f} s; artifacts and report.json in [bold]{out}[/]")
