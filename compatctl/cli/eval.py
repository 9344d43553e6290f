"""`compatctl eval` (not built yet)."""

import typer

from compatctl.cli._util import app, guard, not_built


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guard
def eval_cli(ctx: typer.Context) -> None:
    """Not built yet in this version (see the README)."""
    not_built("eval")
