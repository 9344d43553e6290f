"""`compatctl fit-transform`: learn a map from old embeddings (+ side-info) to the new space."""

from __future__ import annotations

from pathlib import Path

import typer

from compatctl.cli._util import app, config_keys_command, console, err_console, guard, make_progress


@app.command("fit-transform", cls=config_keys_command("compatctl.transform.config:TransformConfig"))
@guard
def fit_transform_cli(
    old_embeddings: Path = typer.Argument(..., help="Old-model embeddings (set, .npz/.safetensors, .parquet, .npy "
                                        "folder or faiss index)."),
    new_embeddings: Path = typer.Argument(..., help="New-model embeddings of the same items (matched by id)."),
    out: Path = typer.Option(..., "--out", help="Transform file to write (.safetensors)."),
    side_info: Path | None = typer.Option(None, "--side-info", help="Side-info embeddings covering the old ids."),
    config: Path | None = typer.Option(None, "--config", help="YAML TransformConfig; key=value overrides win."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides, e.g. kind=linear uncertainty=true"),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out that is not a transform, or "
                               "one fitted on other embeddings."),
    columns: str | None = typer.Option(None, "--columns", help="Column names of the Parquet inputs (.npy folders' "
                                       "metadata): embedding=vector,id=doc_id,label=cls. One mapping for every input "
                                       "that has columns; others ignore it."),
) -> None:
    """Fit a forward transform old (+ side-info) -> new (kinds: auto, linear, procrustes, mlp).

    The default `kind=auto` fits ridge (strength chosen from `ridge_grid`), procrustes and an mlp
    that starts at the best of them, scores each on the validation split (`validation_fraction`)
    with `eval`'s retrieval metric (`distance=cosine|l2`): top-1 of new-model queries against the
    transformed rows, tie-broken by mAP; without labels, the share of new rows whose nearest
    transformed row is their own pair (tie-broken by its mean reciprocal rank). It keeps the best
    and prints the candidates' table. `uncertainty=true` adds FastFill's head (always an mlp).

    Example: compatctl fit-transform runs/old-emb runs/new-emb --out runs/h.safetensors uncertainty=true
    """
    from compatctl.store.outputs import Output, claim_outputs, model_fingerprint_of
    from compatctl.store.sources import parse_columns
    from compatctl.transform import fit_transform, load_transform_config

    mapping = parse_columns(columns)
    claim_outputs([Output(out, "transform")], inputs=[old_embeddings, new_embeddings, side_info, config], force=force,
                  lineage={"old_fingerprint": model_fingerprint_of(old_embeddings),
                           "new_fingerprint": model_fingerprint_of(new_embeddings)})
    cfg = load_transform_config(config, overrides or [])
    progress, tasks = make_progress(), []  # the bar starts with the first epoch: a bad input prints one line

    def show(event: dict) -> None:
        if not tasks:
            progress.start()
            tasks.append(progress.add_task(f"fit {cfg.kind}", total=cfg.epochs, rate=""))
        _show(progress, tasks[0], event)

    try:
        report = fit_transform(old_embeddings, new_embeddings, out, side_info_path=side_info, config=cfg,
                               columns=mapping, progress=show)
        if tasks:
            progress.update(tasks[0], completed=progress.tasks[0].total)
    finally:
        if tasks:
            progress.stop()
    for note in report["notes"]:
        err_console.print(f"note: {note}")
    _candidates(report.get("candidates"))
    _summary(report)


def _show(progress, task, event: dict) -> None:
    if event.get("event") == "epoch":
        scores = " ".join(f"{k} {v:.4f}" for k, v in (event.get("val") or {}).items())
        fold = f"fold {event['fold']}/{event['folds']} " if "fold" in event else ""
        progress.update(task, completed=event["epoch"], rate=f"{fold}loss {event['loss']:.4f} val {scores}".strip())


def _candidates(record: dict | None) -> None:
    from rich.table import Table

    if not record:
        return
    first, second = record["metric"], record["tie_break"]
    table = Table(title=f"candidates on {record['rows']} {record['split']} pairs ({record['distance']}; "
                        f"selected by {first}, then {second})")
    for column in ("candidate", f"val {first}", f"val {second}", "chosen"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for row in record["table"]:
        table.add_row(row["candidate"], f"{row[first]:.4f}", f"{row[second]:.4f}", "*" if row["chosen"] else row.get("note", ""))
    console.print(table)


def _summary(report: dict) -> None:
    from rich.table import Table

    table = Table(title=f"transform {report['kind']} -> {report['out']}", show_header=False)
    rows = {"matched pairs": f"{report['matched']} (old {report['old_rows']}, new {report['new_rows']})",
            "train / validation": f"{report['train_rows']} / {report['validation_rows']}",
            "parameters": f"{report['parameters']:,}", "seconds": f"{report['seconds']:.1f}",
            "fingerprint": report["fingerprint"]}
    split = report["metrics_split"]
    prefix = {"validation": "val", "train": "TRAIN (no validation split)"}.get(split, f"{split} out-of-fold")
    if split not in ("validation", "train"):  # k-fold selection, then a refit on all pairs
        rows["train / validation"] = f"{report['train_rows']} (all, refit) / {split} selection"
    rows.update({f"{prefix} {k}": f"{v:.4f}" for k, v in report["metrics"].items() if k != "rows"})
    for key, value in rows.items():
        table.add_row(key, value)
    console.print(table)
    if report["matched"] < report["old_rows"]:
        err_console.print(f"note: {report['old_rows'] - report['matched']} old rows had no new row with the same id")
