"""`compatctl embed`: a model's embeddings of one split of DATA, as a resumable embedding set."""

from pathlib import Path

import typer

from compatctl.cli._engine import (engine_option, gpus_per_worker_option, ray_address_option, ray_settings_of,
                                   workers_option)
from compatctl.cli._util import app, console, guard, make_progress, stage_reporter


@app.command("embed")
@guard
def embed_cli(
    model: Path = typer.Argument(..., help="Model .safetensors written by train-new."),
    data: str = typer.Argument(..., help="Image-folder directory, .tar.gz, .npz or builtin[:key=value,...]."),
    out: Path = typer.Option(..., "--out", help="Embedding-set directory to write (re-run to resume)."),
    split: str = typer.Option("test", "--split", help="train, test or all (train then test)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images per forward pass."),
    part: str = typer.Option("1/1", "--part", help="Write only shards I, I+N, ... of N workers (I/N)."),
    dtype: str = typer.Option("float32", "--dtype", help="Stored dtype: float32 or float16."),
    shard_rows: int = typer.Option(65536, "--shard-rows", min=1, help="Rows per shard."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    engine: str = engine_option(),
    ray_address: str | None = ray_address_option(),
    workers: int | None = workers_option(),
    gpus_per_worker: float = gpus_per_worker_option(),
) -> None:
    """Embed a DATA split with MODEL into an embedding set (ids, labels, provenance native).

    A killed run resumes where it stopped when re-run with the same arguments.

    Example: compatctl embed runs/old/model.safetensors data/cifar10.tar.gz --out emb/old-test --split test
    """
    from compatctl.models.embed import embed_dataset
    from compatctl.store import parse_part
    from compatctl.store.outputs import Output, claim_outputs

    ray = ray_settings_of(engine, ray_address, workers, gpus_per_worker, part=part)
    claim_outputs([Output(out, "embeddings", part=parse_part(part))], inputs=[model, data])
    with make_progress() as bar:
        if ray is not None:
            from compatctl.engines.ray_engine import embed_on_ray

            path, _ = embed_on_ray(model, data, out, settings=ray, progress=stage_reporter(bar), split=split,
                                   batch_size=batch_size, dtype=dtype, shard_rows=shard_rows, device=device)
        else:
            path = embed_dataset(model, data, out, split=split, batch_size=batch_size, part=part, dtype=dtype,
                                 shard_rows=shard_rows, device=device, progress=stage_reporter(bar))
    if (path / "manifest.json").is_file():
        console.print(f"wrote embedding set {path}")
    else:
        console.print(f"part {part} of {path} done; the set is complete when every part has run")
