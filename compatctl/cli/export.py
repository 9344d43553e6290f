"""`compatctl export`: any embedding source to Parquet, a .npy shard folder, a faiss index or a set."""

from pathlib import Path
from typing import Optional

import typer

from compatctl.cli._util import app, console, guard, make_progress, stage_reporter


@app.command("export")
@guard
def export_cli(
    source: Path = typer.Argument(..., help="Embeddings in any format compatctl reads (set, .npz, .parquet, "
                                  ".npy folder, faiss index)."),
    out: Path = typer.Argument(..., help="OUT.parquet, OUT.faiss / OUT.index, or a new folder (.npy shards; "
                                "--to set for a compatctl set). Never replaced."),
    to: Optional[str] = typer.Option(None, "--to", help="parquet, npy, faiss or set (default: by OUT's suffix; "
                                     "a folder gets npy)."),
    index: str = typer.Option("Flat", "--index", help="faiss factory string of a faiss OUT, e.g. Flat, HNSW32, "
                              "IVF4096,PQ32 (wrapped in IDMap2 so ids survive)."),
    metric: str = typer.Option("ip", "--metric", help="faiss metric: ip (inner product) or l2."),
    train_rows: int = typer.Option(100_000, "--train-rows", min=1, help="Rows drawn (with --seed) to train an "
                                   "index that needs training (IVF, PQ)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the training sample."),
    dtype: str = typer.Option("float32", "--dtype", help="Stored dtype of Parquet/.npy/set outputs: float32 or "
                              "float16."),
    shard_rows: int = typer.Option(1 << 20, "--shard-rows", min=1, help="Rows per .npy shard (or set shard)."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Column names of a Parquet SOURCE (or an .npy "
                                          "folder's metadata): embedding=vector,id=doc_id,label=cls."),
) -> None:
    """Write SOURCE to OUT: Parquet (id, embedding, label, provenance, uncertainty columns), a folder of
    .npy shards with Parquet metadata, a faiss index, or a compatctl embedding set.

    A faiss index keeps ids through IDMap2; its labels, provenance and compatctl metadata go to
    OUT.meta.npz, which compatctl reads back with the index. A trained index (IVF, PQ) is trained
    on --train-rows rows drawn with --seed; the sample is printed and stored in OUT.meta.npz.

    Example: compatctl export emb/g30 gallery.faiss --index IVF4096,PQ32

    Example: compatctl export gallery.parquet emb/gallery --to set --columns embedding=vector,id=doc_id
    """
    from compatctl.store.export import export, refuse_existing, target_of
    from compatctl.store.outputs import Output, claim_outputs
    from compatctl.store.sources import open_embeddings, parse_columns

    target = target_of(out, to)
    kind = "export_file" if target in ("parquet", "faiss") else "export_folder"
    refuse_existing(out, target)
    claim_outputs([Output(out, kind, "OUT")], inputs=[source])
    opened = open_embeddings(source, parse_columns(columns))
    with make_progress() as bar:
        report = stage_reporter(bar)
        result = export(opened, out, target=target, dtype=dtype, index=index, metric=metric, train_rows=train_rows,
                        seed=seed, shard_rows=shard_rows, progress=lambda done, total: report("export", done, total))
    console.print(f"wrote {result['rows']} rows × {result['dim']} dims from {result['source']} ({result['format']}) "
                  f"to {out} ({target})", highlight=False, soft_wrap=True)
    trained = result.get("index", {}).get("trained_on")
    if trained:
        console.print(f"index {index} trained on {trained['rows']} of {trained['of']} rows (seed {trained['seed']})",
                      highlight=False)
