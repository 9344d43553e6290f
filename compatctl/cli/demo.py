"""`compatctl demo` (not built yet)."""

import typer

from compatctl.cli._util import app, guard, not_built


@app.command("demo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guard
def demo_cli(ctx: typer.Context) -> None:
    """Not built yet in this version (see the README)."""
    not_built("demo")
