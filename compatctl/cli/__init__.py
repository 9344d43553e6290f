"""The command-line interface: a thin Typer layer over the library (one module per command)."""

from compatctl.cli._util import app
from compatctl.cli import backfill, compare, demo, embed, eval, fit_transform, inspect, train_new  # noqa: F401  (registers)


def main() -> None:
    """Entry point of the ``compatctl`` console script."""
    app()
