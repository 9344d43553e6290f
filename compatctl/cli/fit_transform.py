"""`compatctl fit-transform`: learn a map from old embeddings (+ side-info) to the new space."""

from __future__ import annotations

from pathlib import Path

import typer

from compatctl.cli._util import app, console, err_console, guard, make_progress


@app.command("fit-transform")
@guard
def fit_transform_cli(
    old_embeddings: Path = typer.Argument(..., help="Old-model embeddings (set directory, .npz or .safetensors)."),
    new_embeddings: Path = typer.Argument(..., help="New-model embeddings of the same items (matched by id)."),
    out: Path = typer.Option(..., "--out", help="Transform file to write (.safetensors)."),
    side_info: Path | None = typer.Option(None, "--side-info", help="Side-info embeddings covering the old ids."),
    config: Path | None = typer.Option(None, "--config", help="YAML TransformConfig; key=value overrides win."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. kind=linear uncertainty=true"),
) -> None:
    """Fit a forward transform (kinds: linear, procrustes, mlp = FCT family; FastFill uncertainty).

    Example: compatctl fit-transform runs/old-emb runs/new-emb --out runs/h.safetensors kind=mlp uncertainty=true
    """
    from compatctl.transform import fit_transform, load_transform_config

    cfg = load_transform_config(config, overrides or [])
    with make_progress() as progress:
        task = progress.add_task(f"fit {cfg.kind}", total=cfg.epochs if cfg.kind == "mlp" else 1, rate="")
        report = fit_transform(old_embeddings, new_embeddings, out, side_info_path=side_info, config=cfg,
                               progress=lambda event: _show(progress, task, event))
        progress.update(task, completed=progress.tasks[0].total)
    _summary(report)


def _show(progress, task, event: dict) -> None:
    if event.get("event") == "epoch":
        progress.update(task, completed=event["epoch"],
                        rate=f"loss {event['loss']:.4f} val {event.get('val_loss', float('nan')):.4f}")


def _summary(report: dict) -> None:
    from rich.table import Table

    table = Table(title=f"transform {report['kind']} -> {report['out']}", show_header=False)
    rows = {"matched pairs": f"{report['matched']} (old {report['old_rows']}, new {report['new_rows']})",
            "train / validation": f"{report['train_rows']} / {report['validation_rows']}",
            "parameters": f"{report['parameters']:,}", "seconds": f"{report['seconds']:.1f}",
            "fingerprint": report["fingerprint"]}
    rows.update({f"val {k}": f"{v:.4f}" for k, v in report["validation"].items() if k != "rows"})
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)
    if report["matched"] < report["old_rows"]:
        err_console.print(f"note: {report['old_rows'] - report['matched']} old rows had no new row with the same id")
