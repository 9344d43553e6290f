"""The training loop of `train-new`: in-memory uint8 data, per-batch augmentation, DDP, resume.

Determinism: epoch ``e`` shuffles with a generator seeded from ``(seed, e)`` and batch ``b``
augments with one seeded from ``(seed, e, b, rank)``; the global torch RNG is re-seeded at the
start of every epoch. So a run resumed after epoch ``e`` repeats exactly what the uninterrupted
run would have done (on the same device, thread count and world size).

A loss that is not finite or explodes stops the run within the epoch (train/divergence.py):
BadInputError naming the epoch, the batch and what to change; nothing is saved for that epoch
and a fresh run leaves nothing behind in ``out_dir``.

After the last epoch the self-check (train/selfcheck.py) measures old/old, new/new and new/old
retrieval on the held-out slice; its report goes into the checkpoint's ``extra["self_check"]``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each global batch of ``batch_size`` images is split
across ranks, gradients are averaged by DDP (gloo on CPU, nccl on CUDA), and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from compatctl.config import to_dict
from compatctl.errors import BadInputError
from compatctl.store import atomic_write_json
from compatctl.train.config import TrainConfig, config_differences
from compatctl.train.divergence import (DivergedError, LossWatch, file_marks, loss_diverged, remove_run_files,
                                        weights_diverged, weights_finite)
from compatctl.train.methods import MethodLoss, Setup, get_method
from compatctl.train.selfcheck import HeldOut, run_self_check
from compatctl.train.setup import checkpoint_state, lineage_of, prepare_run
from compatctl.train.state import STATE_FILE, read_state, restore_optimizer, save_state

MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
RUN_FILES = (MODEL_FILE, STATE_FILE, METRICS_FILE, CONFIG_FILE)
Progress = Callable[[dict], None]


@dataclasses.dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _world(device: torch.device) -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (stable across runs and platforms)."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) + 0x632BE59BD9B4E019)) * 0xBF58476D1CE4E5B9 % (1 << 63)
    return value


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate at optimizer step ``step``: linear warm-up, then cosine (or constant)."""
    warmup = min(config.warmup_epochs, config.epochs) * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if config.schedule == "constant":
        return config.lr
    total = config.epochs * steps_per_epoch
    progress = (step - warmup) / max(1.0, total - warmup)
    return 0.5 * config.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW over the trainable parameters, from the config."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.momentum > 0)


def epoch_batches(count: int, config: TrainConfig, epoch: int, world: World) -> list[torch.Tensor]:
    """This rank's item indices of every batch of ``epoch`` (a too-small last batch is dropped)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(_seed(config.seed, epoch)))
    batches = [order[start:start + config.batch_size] for start in range(0, count, config.batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2 * world.size:
        batches.pop()  # BatchNorm needs more than one item per rank
    return [batch[world.rank::world.size] for batch in batches]


def _prepared(setup: Setup, method_loss: MethodLoss, batches: list[torch.Tensor], epoch: int, world: World,
              workers: int) -> Iterator[tuple[object, float]]:
    """Yield (inputs, seconds spent preparing them) per batch, ``workers`` batches ahead when > 0."""

    def prepare(index: int):
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(_seed(setup.config.seed, epoch, index, world.rank))
        batch = batches[index].to(setup.images.device)
        inputs = method_loss.prepare(setup.images[batch], setup.labels[batch], generator)
        return inputs, time.perf_counter() - start

    if workers == 0:
        yield from (prepare(i) for i in range(len(batches)))
        return
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(prepare, i) for i in range(min(workers, len(batches)))]
        for index in range(len(batches)):
            ahead = index + len(futures)
            if ahead < len(batches):
                futures.append(pool.submit(prepare, ahead))
            yield futures[index].result()


def _all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    if world.size == 1:
        return values
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def run_epoch(model, optimizer, setup: Setup, method_loss: MethodLoss, epoch: int, world: World,
              progress: Progress | None, watch: LossWatch | None = None) -> dict:
    """Train one epoch; return its metrics (summed over ranks).

    Raises DivergedError as soon as ``watch`` reports a bad loss (checked every batch on the CPU).
    """
    config = setup.config
    watch = watch or LossWatch(setup.device)
    torch.manual_seed(_seed(config.seed, epoch, 1 << 20))
    batches = epoch_batches(len(setup.labels), config, epoch, world)
    model.train()
    watch.start_epoch(len(batches))
    start, data_seconds = time.perf_counter(), 0.0
    loss_sum = torch.zeros((), dtype=torch.float64, device=setup.device)
    correct, seen = torch.zeros((), dtype=torch.float64, device=setup.device), 0
    for index, (inputs, prep_seconds) in enumerate(_prepared(setup, method_loss, batches, epoch, world,
                                                           config.num_workers)):
        data_seconds += prep_seconds
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, epoch * len(batches) + index, len(batches))
        result = method_loss.loss(model, inputs)
        optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        watch.observe(index, result.loss)
        if watch.due(index) and (bad := watch.first_bad_batch(world.size)) is not None:
            raise loss_diverged(config, epoch, bad[0], len(batches), bad[1], watch.limit)
        loss_sum += result.loss.detach().double() * result.count
        correct += result.correct.double()
        seen += result.count
        if progress is not None:
            progress({"event": "batch", "epoch": epoch + 1, "batch": index + 1, "batches": len(batches)})
    seconds = time.perf_counter() - start
    total_loss, total_correct, total_seen = _all_sum([loss_sum.item(), correct.item(), float(seen)], world,
                                                     setup.device)
    return {"epoch": epoch + 1, "loss": total_loss / max(total_seen, 1),
            "train_accuracy": total_correct / max(total_seen, 1), "images_per_s": total_seen / seconds,
            "seconds": seconds, "data_seconds": data_seconds, "data_share": data_seconds / seconds,
            "lr": optimizer.param_groups[0]["lr"]}


def _check_resume(out_dir: Path, meta: dict, config: TrainConfig, old_fingerprint: str | None,
                  held_out: HeldOut | None) -> None:
    """The saved run (``meta`` of its training state) must have this config, old model and held-out slice."""
    differing = config_differences(meta["config"], to_dict(config))
    if differing:
        raise BadInputError(f"{out_dir}: --resume with a different config; differing keys: {', '.join(differing)}; "
                            "use the original config and overrides, or train into a new --out")
    if meta.get("old_model") != old_fingerprint:
        raise BadInputError(f"{out_dir}: --resume with a different --old model (fingerprint {old_fingerprint}, "
                            f"the run used {meta.get('old_model')}); pass the original old model")
    digest = held_out.digest if held_out is not None else None
    if meta.get("held_out") != digest:
        raise BadInputError(f"{out_dir}: --resume would hold out other images for the self-check than the run did "
                            f"(digest {digest}, the run's {meta.get('held_out')}): the training data changed; "
                            "resume with the original data, or train into a new --out")


def _check_fresh(out_dir: Path) -> None:
    if (out_dir / STATE_FILE).exists():
        raise BadInputError(f"{out_dir}: already holds a training run; pass --resume to continue it "
                            "or choose another --out")


def _trim_metrics(path: Path, epochs_done: int) -> None:
    """Keep the metrics lines of the epochs already done (a killed run may have written one more)."""
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line).get("epoch", 0) <= epochs_done]
        path.write_text("".join(line + "\n" for line in kept))


def _save_epoch(out_dir: Path, setup: Setup, model, optimizer, metrics: dict, lineage: dict,
                state_extra: dict, self_check: dict | None = None) -> str:
    from compatctl.models import save_model

    config = setup.config
    extra = {"classes": setup.classes, "epochs_done": metrics["epoch"], "metrics": metrics}
    if self_check is not None:
        extra["self_check"] = self_check
    if setup.old is not None and config.method == "bt2":
        extra["compatible_dims"] = setup.old.embedding_width
    fingerprint = save_model(out_dir / MODEL_FILE, model, config=to_dict(config),
                             normalization=setup.normalization.to_dict(), lineage=lineage,
                             class_names=setup.class_names, extra=extra, image_shape=setup.image_shape)
    save_state(out_dir, optimizer, {"epochs_done": metrics["epoch"], "config": to_dict(config),
                                    "old_model": lineage.get("old_model"), "model_fingerprint": fingerprint,
                                    **state_extra})
    with open(out_dir / METRICS_FILE, "a") as handle:  # strict JSON: a NaN would raise, never be written
        handle.write(json.dumps(metrics, sort_keys=True, allow_nan=False) + "\n")
    return fingerprint


def _self_check(setup: Setup, model, held_out: HeldOut | None) -> dict | None:
    """The self-check report of the trained ``model`` (None without a held-out slice)."""
    if held_out is None:
        return None
    model.eval()
    dims = setup.old.embedding_width if setup.old is not None and setup.config.method == "bt2" else None
    return run_self_check(model, setup.normalization.to_dict(), held_out, setup.old, compatible_dims=dims,
                          device=str(setup.device))


def _saved_self_check(out_dir: Path) -> dict | None:
    """The self-check stored with a finished run's model (a resume with no epoch left to train)."""
    from compatctl.store import read_header

    return read_header(out_dir / MODEL_FILE).get("extra", {}).get("self_check")


def _wrap_ddp(model, setup: Setup, world: World, uses_classifier: bool):
    if world.size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [setup.device.index] if setup.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=not uses_classifier)


def _barrier(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()


def _restore(out_dir: Path, config: TrainConfig, setup: Setup, optimizer, lineage: dict,
             held_out: HeldOut | None) -> dict:
    """--resume: check the saved run against this one, load its weights and optimizer; its state's info."""
    meta, state = read_state(out_dir)  # read once: checked, then restored
    _check_resume(out_dir, meta, config, lineage["old_model"], held_out)
    setup.new_model.load_state_dict(checkpoint_state(out_dir / MODEL_FILE, setup.device))
    restore_optimizer(optimizer, meta, state)
    return meta


def _diverged(exc: DivergedError, out_dir: Path, resumed_after: int | None, cleanup: Callable[[], None]):
    """The error to raise for a diverged run, after removing what a fresh run wrote."""
    if resumed_after is not None:
        return DivergedError(f"{exc}; {out_dir} keeps the {resumed_after} earlier epoch(s) as they were")
    cleanup()
    return DivergedError(f"{exc}; nothing was written to {out_dir}")


def train_model(config: TrainConfig, *, out_dir: Path, old_model: Path | None = None, resume: bool = False,
                progress: Progress | None = None) -> Path:
    """Train a model as ``config`` says and write it to ``out_dir/model.safetensors``.

    Args:
        config: a loaded TrainConfig (see :func:`compatctl.train.config.load_train_config`).
        out_dir: where the model, ``metrics.jsonl``, ``config.json`` and the resumable state go.
        old_model: the previous model (needed by l2, bct, bt2; compared in the self-check).
        resume: continue the run in ``out_dir`` from its last finished epoch.
        progress: called with dicts: ``{"event": "start", "config", ...}``, ``"batch"``, ``"epoch"`` (metrics),
            and ``{"event": "self_check", "report": ...}`` at the end (see train/selfcheck.py).
    Returns: the path of the model file; its ``extra["self_check"]`` holds the self-check report.
    Raises: CompatctlError subclasses for bad configs, inputs and resume mismatches; DivergedError
        (a BadInputError) when the loss or the weights stop being finite.
    """
    out_dir = Path(out_dir)
    method = get_method(config.method)
    setup, held_out = prepare_run(config, method, old_model)
    world = _world(setup.device)
    lineage = lineage_of(config, setup)
    model = setup.new_model
    optimizer = make_optimizer(config, model)
    if resume:
        meta = _restore(out_dir, config, setup, optimizer, lineage, held_out)
    else:
        _check_fresh(out_dir)
        meta = {}
    start_epoch = meta.get("epochs_done", 0)
    dir_existed, marks = out_dir.is_dir(), file_marks(out_dir, RUN_FILES)
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / CONFIG_FILE, to_dict(config))
        _trim_metrics(out_dir / METRICS_FILE, start_epoch) if resume else (out_dir / METRICS_FILE).unlink(missing_ok=True)
    report = progress if world.is_main else None
    if report is not None:
        report({"event": "start", "config": to_dict(config), "start_epoch": start_epoch, "epochs": config.epochs,
                "world_size": world.size, "device": str(setup.device), "images": len(setup.labels),
                "held_out": len(held_out.labels) if held_out is not None else 0})
    method_loss = method.build(setup)
    trained = _wrap_ddp(model, setup, world, method.uses_classifier)
    watch = LossWatch(setup.device, meta.get("reference_loss"))
    self_check = _saved_self_check(out_dir) if start_epoch >= config.epochs and world.is_main else None
    for epoch in range(start_epoch, config.epochs):
        try:
            metrics = run_epoch(trained, optimizer, setup, method_loss, epoch, world, report, watch)
            if not weights_finite(model):
                raise weights_diverged(config, epoch)
        except DivergedError as exc:
            cleanup = (lambda: remove_run_files(out_dir, marks, dir_existed)) if world.is_main else (lambda: None)
            raise _diverged(exc, out_dir, start_epoch if resume else None, cleanup) from None
        if world.is_main:
            self_check = _self_check(setup, model, held_out) if epoch + 1 == config.epochs else None
            metrics["fingerprint"] = _save_epoch(out_dir, setup, model, optimizer, metrics, lineage,
                                                 {"reference_loss": watch.reference,
                                                  "held_out": held_out.digest if held_out else None}, self_check)
            if report is not None:
                report({"event": "epoch", **metrics})
        _barrier(world)
    if report is not None and self_check is not None:
        report({"event": "self_check", "report": self_check})
    return out_dir / MODEL_FILE
