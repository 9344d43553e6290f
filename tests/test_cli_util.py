"""The CLI's shared progress reporter: one task per library stage, totals and rates kept."""

import io

from rich.console import Console
from rich.progress import Progress, TextColumn

from compatctl.cli._util import stage_reporter


def test_stage_reporter_one_task_per_stage_with_labels():
    progress = Progress(TextColumn("{task.description} {task.fields[rate]}"),
                        console=Console(file=io.StringIO()), auto_refresh=False)
    report = stage_reporter(progress, labels={"write": "writing shards"})
    report("write", 5, 10)
    report("write", 10, 10)
    report("order", 0, 0)
    descriptions = {task.description: task for task in progress.tasks}
    assert set(descriptions) == {"writing shards", "order"}
    assert descriptions["writing shards"].completed == 10 and descriptions["writing shards"].total == 10
    assert descriptions["order"].total is None  # unknown size: an indeterminate bar


def test_stage_reporter_without_unit_shows_no_rate():
    progress = Progress(console=Console(file=io.StringIO()), auto_refresh=False)
    report = stage_reporter(progress, unit=None)
    report("curve", 3, 4)
    assert progress.tasks[0].fields["rate"] == ""
