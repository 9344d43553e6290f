"""`compatctl train-new` (not built yet)."""

import typer

from compatctl.cli._util import app, guard, not_built


@app.command("train-new", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guard
def train_new_cli(ctx: typer.Context) -> None:
    """Not built yet in this version (see the README)."""
    not_built("train-new")
