"""`compatctl demo`: the whole model update on built-in data, in one command."""

from pathlib import Path

import typer

from compatctl.cli._util import app, console, err_console, guard, make_progress, stage_reporter


@app.command("demo")
@guard
def demo_cli(
    out: Path = typer.Option(Path("compatctl-demo"), "--out", help="Folder for the demo's artifacts (replaced "
                             "if an earlier demo made it)."),
    quick: bool = typer.Option(False, "--quick", help="A smaller run (fewer classes, images and epochs)."),
) -> None:
    """Train old and new models (independent, BCT, BT²), fit transforms, backfill and evaluate.

    Runs offline on the built-in generated images, in 30-60 s on 2 CPU cores, and
    prints one table: old/old; per method new/new and new/old; new/h(old); backfill-curve AUCs.
    Every artifact in --out is real: inspect it, evaluate it, backfill it.

    Example: compatctl demo --out compatctl-demo
    """
    from compatctl.demo import QUICK, DemoSettings, run_demo, summary_rows
    from compatctl.store.outputs import Output, claim_outputs

    claim_outputs([Output(out, "demo")])
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
    for command in (f"compatctl inspect {out}/bt2/model.safetensors",
                    f"compatctl eval {out}/emb/bt2-test {out}/emb/old-test --fail-under top1=0.3",
                    f"compatctl backfill {out}/emb/old-test --transform {out}/transforms/mlp.safetensors "
                    f"--out {out}/emb/backfilled --budget 0.3 --order uncertainty --new-embeddings {out}/emb/independent-test",
                    f"compatctl eval {out}/emb/independent-test {out}/emb/h_mlp-test "
                    f"--backfill-with {out}/emb/independent-test --order uncertainty --steps 10"):
        console.print(f"  {command}", markup=False, highlight=False)
