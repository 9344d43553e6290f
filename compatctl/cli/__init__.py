"""The command-line interface: a thin Typer layer over the library (one module per command)."""

from compatctl.cli._util import app
from compatctl.cli import (backfill, compare, demo, embed, eval, export, fit_transform, inspect,  # noqa: F401
                           train_new)  # (importing registers each command)


def main() -> None:
    """Entry point of the ``compatctl`` console script."""
    app()
