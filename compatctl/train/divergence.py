"""Stop a diverging run at once, and leave no trace of it behind.

A step whose loss is not finite, or is more than ``EXPLODED_FACTOR`` times the run's first loss
(at least 1), has diverged: lr=50 on the built-in data drives the loss from 1.4 to 1e6 within
an epoch and only later to NaN, and a model that trained on through either is garbage. The
check runs on the device without a sync: each step updates a device scalar (the first bad
batch of the epoch), read back every ``sync_every`` batches (every batch on the CPU, where
reading is free). Under DDP the ranks agree on it with an all-reduce at the same batches.

On divergence nothing is saved for the epoch; a fresh run removes every run file it wrote, a
resumed one keeps the earlier epochs' files as they were.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from compatctl.errors import BadInputError
from compatctl.train.config import TrainConfig

EXPLODED_FACTOR = 1000.0
CUDA_SYNC_EVERY = 16  # batches between read-backs on an accelerator


class DivergedError(BadInputError):
    """Training stopped because the loss or the weights stopped being finite (exit code 2)."""


class LossWatch:
    """Tracks on the device the first batch of an epoch whose loss is bad (see the module docstring).

    ``reference`` is the run's first loss (None: taken from the next batch; a resume passes the
    saved one so that it stops exactly where the uninterrupted run would have).
    """

    def __init__(self, device: torch.device, reference: float | None = None):
        self.device, self.reference = device, reference
        self.sync_every = 1 if device.type == "cpu" else CUDA_SYNC_EVERY
        self.batches, self.first_bad, self.bad_loss = 0, None, None

    def start_epoch(self, batches: int) -> None:
        self.batches = batches
        self.first_bad = torch.full((), batches, dtype=torch.int64, device=self.device)
        self.bad_loss = torch.zeros((), dtype=torch.float32, device=self.device)

    @property
    def limit(self) -> float:
        reference = self.reference if self.reference is not None and math.isfinite(self.reference) else 1.0
        return EXPLODED_FACTOR * max(reference, 1.0)

    def observe(self, index: int, loss: torch.Tensor) -> None:
        """Record batch ``index``'s loss (no host sync, except once for the run's first loss)."""
        loss = loss.detach().float()
        if self.reference is None:
            self.reference = float(loss)  # one read-back per run
        bad = ~(torch.isfinite(loss) & (loss <= self.limit))
        new = bad & (self.first_bad == self.batches)
        self.first_bad = torch.where(new, index, self.first_bad)
        self.bad_loss = torch.where(new, loss, self.bad_loss)

    def due(self, index: int) -> bool:
        return (index + 1) % self.sync_every == 0 or index + 1 == self.batches

    def first_bad_batch(self, world_size: int) -> tuple[int, float | None] | None:
        """(index, loss) of the epoch's first bad batch so far on any rank, None if none.

        The loss is None when another rank saw the batch first (it is not known here).
        """
        index = self.first_bad.clone()
        if world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(index, op=dist.ReduceOp.MIN)
        index = int(index.item())
        if index >= self.batches:
            return None
        return index, (float(self.bad_loss.item()) if index == int(self.first_bad.item()) else None)


def _advice(config: TrainConfig) -> str:
    steps = f"lower lr (now {config.lr:g})"
    if config.grad_clip > 0:
        return f"{steps} or raise warmup_epochs (now {config.warmup_epochs:g}); grad_clip is {config.grad_clip:g}"
    return f"{steps}, raise warmup_epochs (now {config.warmup_epochs:g}) or set grad_clip (now 0, off; e.g. 5)"


def loss_diverged(config: TrainConfig, epoch: int, batch: int, batches: int, loss: float | None,
                  limit: float) -> DivergedError:
    """The error for a bad loss at 0-based ``epoch`` and ``batch`` (``loss`` None: seen on another rank)."""
    if loss is None:
        what = "the loss is not finite or exploded on another process"
    elif math.isfinite(loss):
        what = f"the loss exploded to {loss:.3g} (over {limit:.3g}, {EXPLODED_FACTOR:g}x the first loss)"
    else:
        what = f"the loss is {loss}"
    return DivergedError(f"training diverged at epoch {epoch + 1}, batch {batch + 1} of {batches}: {what}; "
                         + _advice(config))


def weights_diverged(config: TrainConfig, epoch: int) -> DivergedError:
    return DivergedError(f"training diverged in epoch {epoch + 1}: the model's weights are not finite; "
                         + _advice(config))


def weights_finite(model: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``model`` is finite (one read-back)."""
    flags = [torch.isfinite(t).all() for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def file_marks(out_dir: Path, names: tuple[str, ...]) -> dict[str, tuple | None]:
    """What each run file in ``out_dir`` is before a run: (inode, mtime, size), or None when absent."""
    marks = {}
    for name in names:
        try:
            stat = (out_dir / name).stat()
            marks[name] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            marks[name] = None
    return marks


def remove_run_files(out_dir: Path, before: dict[str, tuple | None], dir_existed: bool) -> None:
    """Remove the run files written since ``before`` (see :func:`file_marks`); ``out_dir`` too if the run made it."""
    after = file_marks(out_dir, tuple(before))
    for name, mark in after.items():
        if mark is not None and mark != before[name]:
            (out_dir / name).unlink(missing_ok=True)
    if not dir_existed and out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()
