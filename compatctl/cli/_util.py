"""Shared pieces of the CLI layer: the Typer app, the console, error handling, option helpers."""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable

import typer
from rich.console import Console

from compatctl import __version__
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


def _print_version(value: bool) -> None:
    if value:
        console.print(f"compatctl {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _app_options(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                              help="Print compatctl's version and exit.")) -> None:
    """Update the embedding model of a retrieval system without re-embedding the whole gallery."""


def guard(command: Callable) -> Callable:
    """Run a command body; turn a CompatctlError into one red line and its exit code (2, or 1 for gates)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from compatctl.store.outputs import command_scope

        try:
            with command_scope():  # output locks taken by the command are held until it ends
                return command(*args, **kwargs)
        except CompatctlError as exc:
            from rich.markup import escape  # a message's own brackets ("compatctl[ray]") are text, not markup

            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            err_console.print(f"[bold red]error:[/] {where}disk full ({exc.strerror}); free space and re-run "
                              "the same command (complete files are kept)", markup=True, highlight=False,
                              soft_wrap=True)
            raise typer.Exit(2) from None
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


def config_keys_markdown(config_class: type, prefix: str = "") -> list[str]:
    """One markdown bullet per key of a config dataclass (nested ones dotted): type, default, range, help."""
    import dataclasses

    lines = []
    for field in dataclasses.fields(config_class):
        name = f"{prefix}{field.name}"
        nested = field.default_factory if field.default_factory is not dataclasses.MISSING else None
        if nested is not None and dataclasses.is_dataclass(nested):
            lines += config_keys_markdown(nested, name + ".")
            continue
        meta = field.metadata
        default = nested() if nested is not None else field.default
        facts = [str(field.type), f"default {default!r}" if default is not dataclasses.MISSING else ""]
        if meta.get("choices"):
            facts.append("one of " + " | ".join(map(str, meta["choices"])))
        if meta.get("min") is not None or meta.get("max") is not None:
            facts.append(f"{meta.get('min', '')}..{'' if meta.get('max') is None else meta['max']}")
        lines.append(f"- `{name}` ({', '.join(f for f in facts if f)})" + (f": {meta['help']}" if meta.get("help") else ""))
    return lines


def config_keys_command(config_class: str) -> type:
    """A Typer command class whose ``--help`` ends with every key of ``config_class`` ("module:Class").

    The config module is imported only when help is shown, so the command itself starts as fast as before.
    """
    import importlib

    from typer.core import TyperCommand

    class ConfigKeysCommand(TyperCommand):
        def format_help(self, ctx, formatter):
            if not self.epilog:
                module, name = config_class.split(":")
                keys = config_keys_markdown(getattr(importlib.import_module(module), name))
                self.epilog = ("**Config keys** (in the YAML file, or as key=value; nested keys dotted):\n\n"
                               + "\n".join(keys))
            return super().format_help(ctx, formatter)

    return ConfigKeysCommand


def shell_command(args: list, width: int = 80, indent: str = "  ") -> str:
    """``args`` as a shell command that survives copy-paste: each argument quoted, lines of at most
    ``width`` columns joined by `` \\`` continuations, an option kept with its value (an argument
    longer than a line gets a line of its own)."""
    import shlex

    words = [shlex.quote(str(arg)) for arg in args]
    units, index = [], 0
    while index < len(words):
        pair = words[index].startswith("-") and index + 1 < len(words) and not words[index + 1].startswith("-")
        pair = pair and len(indent) + 4 + len(words[index]) + 1 + len(words[index + 1]) + 2 <= width
        units.append(" ".join(words[index:index + 1 + pair]))
        index += 1 + pair
    lines, line = [], indent + units[0]
    for unit in units[1:]:
        if len(line) + 1 + len(unit) + 2 > width:  # + " \"
            lines.append(line + " \\")
            line = indent + "    " + unit
        else:
            line += " " + unit
    return "\n".join(lines + [line])
