"""`compatctl train-new`: train a model (independent, or compatible with --old) from a YAML config."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from compatctl.cli._util import app, config_keys_command, console, err_console, guard, make_progress


class EpochProgress:
    """Turns the trainer's progress events into a rich bar: one row per epoch with loss, accuracy, images/s."""

    def __init__(self, progress):
        self.progress, self.task = progress, None

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "start":
            err_console.print("config: " + json.dumps(event["config"], sort_keys=True), highlight=False, soft_wrap=True)
            err_console.print(f"training on {event['images']} images, device {event['device']}, "
                              f"{event['world_size']} process(es), from epoch {event['start_epoch'] + 1}")
        elif kind == "batch":
            if self.task is None:
                self.task = self.progress.add_task(f"epoch {event['epoch']}", total=event["batches"], rate="")
            self.progress.update(self.task, completed=event["batch"])
        elif kind == "epoch":
            rate = (f"loss {event['loss']:.4f}  acc {event['train_accuracy']:.3f}  "
                    f"{event['images_per_s']:.0f} img/s")
            self.progress.update(self.task, rate=rate)
            self.task = None


@app.command("train-new", cls=config_keys_command("compatctl.train.config:TrainConfig"),
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guard
def train_new_cli(
    ctx: typer.Context,
    config: Path = typer.Argument(..., help="YAML training config (see examples/cifar10/)."),
    out: Path = typer.Option(..., "--out", help="Output folder: model.safetensors, metrics.jsonl, training state."),
    old: Path | None = typer.Option(None, "--old", help="The old model to stay compatible with (l2, bct, bt2)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last finished epoch."),
) -> None:
    """Train a new embedding model; extra KEY=VALUE arguments override the config.

    Example: compatctl train-new examples/cifar10/bct.yaml --old runs/old/model.safetensors
    --out runs/bct data=../shared/data/cifar10_jpg.tar.gz epochs=5
    """
    from compatctl.store.outputs import Output, claim_outputs
    from compatctl.train import load_train_config, train_model

    claim_outputs([Output(out, "training")], inputs=[config, old])
    train_config = load_train_config(config, list(ctx.args))
    with make_progress() as progress:
        path = train_model(train_config, out_dir=out, old_model=old, resume=resume, progress=EpochProgress(progress))
    console.print(f"model: {path}")
