"""Shared pieces of the CLI layer: the Typer app, the console, error handling, option helpers."""

from __future__ import annotations

import functools
from collections.abc import Callable

import typer
from rich.console import Console

from compatctl.errors import CompatctlError

app = typer.Typer(
    name="compatctl",
    help="Update the embedding model of a retrieval system without re-embedding the whole gallery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs reflow to the terminal width
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err_console = Console(stderr=True)


def guard(command: Callable) -> Callable:
    """Run a command body; turn a CompatctlError into one red line and its exit code (2, or 1 for gates)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CompatctlError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; re-run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


def make_progress():
    """A rich progress bar with rate and time columns, on stderr so stdout stays clean."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err_console, transient=False)


def stage_reporter(progress, labels: dict[str, str] | None = None, unit: str | None = "rows/s"):
    """A library ``progress(stage, done, total)`` callback drawing one task of ``progress`` per stage.

    ``labels`` renames stages for display; ``unit`` (None: no rate) labels the done-per-second rate.
    """
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task((labels or {}).get(stage, stage), total=total or None, rate="")
        elapsed = progress.tasks[tasks[stage]].elapsed
        rate = f"{done / elapsed:,.0f} {unit}" if unit and elapsed else ""
        progress.update(tasks[stage], completed=done, total=total or None, rate=rate)

    return report


def not_built(command: str) -> None:
    """For a command of the SPEC that this version does not implement yet."""
    raise CompatctlError(f"'compatctl {command}' is not built in this version yet")
