"""`compatctl embed` (not built yet)."""

import typer

from compatctl.cli._util import app, guard, not_built


@app.command("embed", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guard
def embed_cli(ctx: typer.Context) -> None:
    """Not built yet in this version (see the README)."""
    not_built("embed")
