"""`compatctl inspect`: what an artifact is, without loading it."""

import json
from pathlib import Path
from typing import Optional

import typer

from compatctl.cli._util import app, console, guard


@app.command("inspect")
@guard
def inspect_cli(
    path: Path = typer.Argument(..., help="A model, transform, or embeddings in any format compatctl reads "
                              "(set, .npz/.safetensors, .parquet, .npy folder, faiss index)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    quick: bool = typer.Option(False, "--quick", help="Skip hashing: check sizes, tensors and row totals only."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Column names of a Parquet table (or an .npy "
                                          "folder's metadata): embedding=vector,id=doc_id,label=cls."),
) -> None:
    """Show kind, format version, dims, rows, fingerprint, config and provenance counts; for a model
    along a series of updates, the series (v1 → v2 → this model, and which it is compatible with).

    Verifies integrity on the way: an embedding set's manifest, row totals and every shard's
    sha256 (--quick: sizes and tensors only); a model's or transform's weights against its
    fingerprint. A corrupt artifact exits 2 with one line naming the bad shard or file.

    Example: compatctl inspect runs/old/model.safetensors
    """
    from compatctl.store.describe import describe
    from compatctl.store.sources import parse_columns

    info = describe(path, quick=quick, columns=parse_columns(columns))
    if as_json:
        console.print_json(json.dumps(info, default=str))
        return
    from rich.table import Table

    table = Table(title=str(path), show_header=False)
    for key, value in info.items():
        if key in ("path", "config"):
            continue
        if key == "series" and value:  # v1 → v2 → this model, oldest first
            table.add_row(key, "\n→ ".join(value))
            continue
        table.add_row(key, json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value))
    console.print(table)
    if info.get("config"):
        import yaml

        console.print("[bold]config[/]")
        console.print(yaml.safe_dump(info["config"], sort_keys=False).rstrip(), markup=False, highlight=False)
