"""`compatctl train-new`: train a model (independent, or compatible with --old) from a YAML config."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from compatctl.cli._util import app, config_keys_command, console, err_console, guard, make_progress


class EpochProgress:
    """Turns the trainer's progress events into a rich bar: one row per epoch with loss, accuracy, images/s.

    Keeps the self-check report (``self.self_check``) for the table printed after the bar.
    """

    def __init__(self, progress):
        self.progress, self.task, self.self_check = progress, None, None

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            err_console.print("config: " + json.dumps(event["config"], sort_keys=True), highlight=False, soft_wrap=True)
            err_console.print(f"training on {event['images']} images ({event['held_out']} held out for the "
                              f"self-check), device {event['device']}, {event['world_size']} process(es), "
                              f"from epoch {event['start_epoch'] + 1}")
        elif kind == "batch":
            if self.task is None:
                self.task = self.progress.add_task(f"epoch {event['epoch']}", total=event["batches"], rate="")
            self.progress.update(self.task, completed=event["batch"])
        elif kind == "epoch":
            rate = (f"loss {event['loss']:.4f}  acc {event['train_accuracy']:.3f}  "
                    f"{event['images_per_s']:.0f} img/s")
            self.progress.update(self.task, rate=rate)
            self.task = None
        elif kind == "self_check":
            self.self_check = event["report"]


def print_self_check(report: dict) -> None:
    """The self-check as a heading line and a rich table: top-1 and mAP of old/old, new/new and new/old."""
    from rich.table import Table

    console.print(f"self-check on {report['images']} held-out training images, {report['classes']} classes "
                  f"({report['distance']}, leave-one-out):")
    table = Table("query / gallery", "top-1", "mAP")
    for column in table.columns[1:]:
        column.justify = "right"
    rows = [("old / old", "old_old"), ("new / new", "new_new"),
            (f"new / old (first {report.get('new_old_dims')} dims)", "new_old")]
    for name, key in rows:
        if key in report:
            table.add_row(name, f"{report[key]['top1']:.4f}", f"{report[key]['map']:.4f}")
    console.print(table)


def report_self_check(report: dict | None, require_compatible: bool) -> None:
    """Print the self-check; warn when it failed the criterion, or raise GateFailed (exit 1) if required."""
    from compatctl.train.selfcheck import fail_if_incompatible, incompatibility

    if report is not None:
        print_self_check(report)
    if require_compatible:
        fail_if_incompatible(report)
    elif (problem := incompatibility(report)) is not None:
        err_console.print(f"[bold yellow]warning:[/] {problem}", highlight=False, soft_wrap=True)


@app.command("train-new", cls=config_keys_command("compatctl.train.config:TrainConfig"),
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guard
def train_new_cli(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML training config (see examples/cifar10/)."),
    out: Path = typer.Option(..., "--out", help="Output folder: model.safetensors, metrics.jsonl, training state."),
    old: Path | None = typer.Option(None, "--old", help="The old model to stay compatible with (l2, bct, bt2)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished epoch."),
    require_compatible: bool = typer.Option(False, "--require-compatible",
                                            help="Exit 1 (after saving the model) when the self-check finds "
                                                 "new/old top-1 <= old/old top-1. Needs --old."),
) -> None:
    """Train a new embedding model; extra KEY=VALUE arguments override the config.

    Self-check: `validation_fraction` of the training images (default 0.1, at most 2000, the same
    share of each class, seeded) is held out; after the last epoch a table shows top-1 and mAP
    (cosine, leave-one-out) on it for old/old, new/new and new/old (BT²: its compatible dims). A
    warning line says when new/old top-1 is not above old/old; `--require-compatible` makes that
    exit 1. The report is stored in the model's metadata (`extra.self_check`).
    `validation_fraction=0` trains on every image and skips the check.

    A loss that stops being finite or explodes stops training at once (exit 2, nothing written).
    Exit codes: 0 ok, 1 `--require-compatible` failed, 2 bad input or a diverged run.

    Example: compatctl train-new examples/cifar10/bct.yaml --old runs/old/model.safetensors
    --out runs/bct data=../shared/data/cifar10_jpg.tar.gz epochs=5
    """
    from compatctl.store.outputs import Output, claim_outputs
    from compatctl.train import load_train_config, train_model
    from compatctl.train.selfcheck import check_require_compatible

    train_config = load_train_config(config, list(ctx.args))  # cheap: names the data and teacher paths read
    claim_outputs([Output(out, "training")], inputs=[config, old, train_config.data, train_config.bt2.teacher])
    if require_compatible:
        check_require_compatible(old, train_config.validation_fraction)
    with make_progress() as progress:
        events = EpochProgress(progress)
        path = train_model(train_config, out_dir=out, old_model=old, resume=resume, progress=events)
    console.print(f"model: {path}")
    report_self_check(events.self_check, require_compatible)
