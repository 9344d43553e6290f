"""`compatctl backfill`: transform a stored gallery and re-embed a budget of its rows, best first."""

from __future__ import annotations

from pathlib import Path

import typer

from compatctl.cli._engine import (engine_option, gpus_per_worker_option, ray_address_option, ray_settings_of,
                                   workers_option)
from compatctl.cli._util import app, console, err_console, guard, make_progress, stage_reporter

STAGES = {"side-info": "merge side-info", "scan": "order rows", "merge": "merge new rows", "write": "write shards"}


@app.command("backfill")
@guard
def backfill_cli(
    gallery: Path = typer.Argument(..., help="Old-model gallery embeddings (set, .npz/.safetensors, .parquet, "
                                 ".npy folder or faiss index)."),
    transform: list[Path] = typer.Option(..., "--transform", help="Transform written by fit-transform; repeat it "
                                         "for a chain v1 → v2 → v3 (applied in order, links checked)."),
    out: Path | None = typer.Option(None, "--out", help="NEW_GALLERY directory to write (or continue)."),
    budget: float = typer.Option(0.0, "--budget", help="Fraction of rows to re-embed with the new model, 0..1."),
    order: str = typer.Option("random", "--order", help="Which rows first: random, uncertainty, norm."),
    new_model: Path | None = typer.Option(None, "--new-model", help="New model; embeds the budget's rows of --data."),
    data: str | None = typer.Option(None, "--data", help="DATA holding the gallery's items (with --new-model)."),
    new_embeddings: Path | None = typer.Option(None, "--new-embeddings", help="New-model embeddings, merged by id."),
    side_info: Path | None = typer.Option(None, "--side-info", help="Side-info embeddings of the gallery."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random order."),
    part: str | None = typer.Option(None, "--part", help="I/N: write only worker I's shards of N."),
    plan_only: bool = typer.Option(False, "--plan-only", help="Only write the budget's ordered ids to --plan."),
    plan: Path | None = typer.Option(None, "--plan", help="Plan file: .csv (rank,id) or .jsonl."),
    force: bool = typer.Option(False, "--force", help="Accept model-fingerprint mismatches, and a smaller "
                               "--budget onto an existing NEW_GALLERY (its extra backfilled rows are dropped)."),
    block_rows: int = typer.Option(65536, "--block-rows", min=1, help="Rows read per block."),
    columns: str | None = typer.Option(None, "--columns", help="Column names of the Parquet inputs (GALLERY, "
                                       "--new-embeddings, --side-info; .npy folders' metadata): "
                                       "embedding=vector,id=doc_id,versions=model. One mapping for every input "
                                       "that has columns; others ignore it."),
    engine: str = engine_option(),
    ray_address: str | None = ray_address_option(),
    workers: int | None = workers_option(),
    gpus_per_worker: float = gpus_per_worker_option(),
) -> None:
    """Write NEW_GALLERY: GALLERY through the transform, the first ceil(budget*N) rows of the order
    replaced by new-model embeddings. Re-run the same command to resume; point --out at an earlier
    NEW_GALLERY with a larger --budget to continue it without redoing its backfilled rows.

    Example: compatctl backfill runs/old-gallery --transform runs/h.safetensors --out runs/gallery-30
    --budget 0.3 --order uncertainty --new-model runs/new/model.safetensors --data cifar10.tar.gz

    A series: `--transform h12.safetensors --transform h23.safetensors` brings a v1 gallery to v3;
    a gallery with a per-row `versions` column (model fingerprints) sends each row through the
    links it needs (rows already at the newest model stay native). See docs/backfill.md.
    """
    from compatctl.backfill import backfill
    from compatctl.errors import BadInputError
    from compatctl.store import parse_part
    from compatctl.store.outputs import Output, claim_outputs
    from compatctl.store.sources import parse_columns

    mapping = parse_columns(columns)
    ray = ray_settings_of(engine, ray_address, workers, gpus_per_worker, part=part)
    if ray is not None and plan_only:
        raise BadInputError("--plan-only is one quick pass: drop --engine ray for it")
    writes = Output(plan, "plan", "--plan") if plan_only else Output(out, "embeddings", part=parse_part(part))
    claim_outputs([writes], inputs=[gallery, *transform, new_model, data, new_embeddings, side_info,
                                    out if plan_only else None], force=force)
    if ray is not None:
        from compatctl.engines.ray_engine import backfill_on_ray

        with make_progress() as progress:
            return _print_summary(backfill_on_ray(
                gallery, transform, out, settings=ray, budget=budget, order=order, seed=seed, side_info_path=side_info,
                new_model=new_model, data=data, new_embeddings=new_embeddings, force=force, block_rows=block_rows,
                columns=mapping, progress=stage_reporter(progress, STAGES)))
    with make_progress() as progress:
        summary = backfill(gallery, transform if len(transform) > 1 else transform[0], out, budget=budget, order=order, seed=seed, side_info_path=side_info,
                           new_model=new_model, data=data, new_embeddings=new_embeddings, part=parse_part(part),
                           force=force, plan_only=plan_only, plan_path=plan, block_rows=block_rows,
                           columns=mapping, progress=stage_reporter(progress, STAGES))
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    for warning in summary.get("warnings", []):
        err_console.print(f"warning: {warning}", highlight=False)
    if "plan" in summary:
        console.print(f"plan: {summary['planned_rows']} ids of {summary['budget_rows']} "
                      f"({summary['already_backfilled']} already backfilled) -> {summary['plan']}", highlight=False)
        return
    state = "complete" if summary["complete"] else "this part done; other parts pending"
    rate = summary["rows_written"] / summary["seconds"] if summary["seconds"] else 0.0
    console.print(f"{summary['out']}: {summary['rows']} rows, budget {summary['budget']} = "
                  f"{summary['budget_rows']} rows by {summary['order']} order; wrote {summary['shards_written']} "
                  f"of {summary['shards_total']} shards ({summary['new_rows']} new, {summary['reused_rows']} reused "
                  f"backfilled rows), {rate:,.0f} rows/s; {state}", highlight=False)
