"""Training loop of the ``mlp`` transform: AdamW, warm-up + cosine schedule, early stopping on the
validation retrieval metric (compatctl.transform.select)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from compatctl.transform.config import TransformConfig
from compatctl.transform.mlp import ForwardTransformNet, build_net, export_numpy
from compatctl.transform.pairs import Pairs
from compatctl.transform.select import Scorer


class Objective:
    """Per-row loss L_i (alignment + optional discriminative / contrastive / structure terms) and
    the FastFill total. The in-batch terms compare row i with the other rows of its batch."""

    def __init__(self, net: ForwardTransformNet, train: Pairs, config: TransformConfig):
        self.net, self.config = net, config
        self.class_means = None
        if config.discriminative_weight and train.labels is not None:
            classes = np.unique(train.labels)
            self.label_index = {int(c): i for i, c in enumerate(classes)}
            means = np.stack([train.new[train.labels == c].mean(0) for c in classes])
            self.class_means = F.normalize(torch.from_numpy(means).float(), dim=1)

    def raw(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.net.new_scale + self.net.new_mean

    def alignment(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-row alignment: squared error in the scaled space, or 1 − cosine in the raw space."""
        if self.config.loss == "mse":
            return ((out - target) ** 2).mean(1)
        return 1.0 - F.cosine_similarity(self.raw(out), self.raw(target), dim=1)

    def per_row(self, out, target, labels) -> torch.Tensor:
        config = self.config
        loss = self.alignment(out, target)
        if self.class_means is not None:
            logits = F.normalize(self.raw(out), dim=1) @ self.class_means.T / config.disc_temperature
            loss = loss + config.discriminative_weight * F.cross_entropy(
                logits, labels, reduction="none", label_smoothing=config.label_smoothing)
        if config.contrastive_weight or config.structure_weight:
            mapped, new = F.normalize(self.raw(out), dim=1), F.normalize(self.raw(target), dim=1)
            if config.contrastive_weight:  # InfoNCE: h(old_i) should be nearer new_i than any other new_j
                logits = mapped @ new.T / config.contrastive_temperature
                own = torch.arange(len(out))
                loss = loss + config.contrastive_weight * F.cross_entropy(logits, own, reduction="none")
            if config.structure_weight:  # new_i should see the h(old_j) as it sees the new_j
                gap = new @ mapped.T - new @ new.T
                loss = loss + config.structure_weight * (gap ** 2).mean(1)
        return loss

    def total(self, per_row: torch.Tensor, log_var: torch.Tensor | None) -> torch.Tensor:
        if log_var is None:
            return per_row.mean()
        return (0.5 * torch.exp(-log_var) * per_row + self.config.mu_unc * log_var).mean()


def fit_mlp(train: Pairs, config: TransformConfig, base: dict, scorer: Scorer | None = None,
            progress=None, *, stop_after: int | None = None, watch: Pairs | None = None,
            on_epoch: Callable[[int, np.ndarray], None] | None = None) -> tuple[dict, dict, dict | None]:
    """Train the FCT-family transform on ``train`` as a residual on the closed form ``base``.

    Epoch 0 is ``base`` itself. With a ``scorer`` (validation pairs) every epoch is scored with
    the retrieval metric and the best epoch is kept, so the closed form wins when the mlp does
    not beat it; training stops after ``patience`` epochs without a better score. Without a
    scorer all epochs run and the last one is kept. ``stop_after`` ends training after that many
    epochs (the schedule still spans ``config.epochs``, so a refit stops where a fold run was
    measured). ``watch`` + ``on_epoch``: after every epoch (0 included) ``on_epoch(epoch,
    mapped)`` receives the net's outputs for ``watch.old`` (k-fold selection records them).
    Returns (numpy tensors for Transform.apply, architecture incl. epochs run and best epoch,
    the best epoch's validation scores or None).
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    net = build_net(train, config, base)
    objective = Objective(net, train, config)
    data = _tensors(net, train, objective)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = _schedule(optimizer, config, epoch_steps(len(train), config))
    generator = torch.Generator().manual_seed(config.seed)
    scores = _score(net, scorer)
    if on_epoch is not None:
        on_epoch(0, _map(net, watch))
    best = (scores, 0, copy.deepcopy(net.state_dict()))  # epoch 0 = the closed form
    epoch = 0
    for epoch in range(1, min(config.epochs, stop_after or config.epochs) + 1):
        train_loss = _train_epoch(net, objective, data, optimizer, schedule, config, generator)
        scores = _score(net, scorer)
        if on_epoch is not None:
            on_epoch(epoch, _map(net, watch))
        if scorer is None or scorer.key(scores) > scorer.key(best[0]):
            best = (scores, epoch, copy.deepcopy(net.state_dict()))
        if progress:
            progress({"event": "epoch", "epoch": epoch, "epochs": config.epochs, "loss": train_loss,
                      "val": scores, "best_epoch": best[1]})
        if scorer is not None and epoch - best[1] >= config.patience:
            break
    net.load_state_dict(best[2])
    if config.uncertainty and best[1] == 0:
        _fit_uncertainty_head(net, objective, data, config, generator)
    architecture = {"branch_width": config.branch_width, "width": config.width, "blocks": config.blocks,
                    "norm": "layernorm", "skip": "closed form", "epochs_run": epoch, "best_epoch": best[1],
                    "best_val": best[0]}
    return export_numpy(net), architecture, best[0]


@torch.no_grad()
def _score(net, scorer: Scorer | None, batch_rows: int = 8192) -> dict | None:
    """Validation retrieval scores of the net's current mapping (None without a scorer)."""
    if scorer is None:
        return None
    return scorer.score(_map(net, scorer.pairs, batch_rows))


@torch.no_grad()
def _map(net, pairs: Pairs, batch_rows: int = 8192) -> np.ndarray:
    """The net's raw-space outputs for ``pairs.old`` (+ side-info), in eval mode."""
    net.eval()
    outputs = []
    for start in range(0, len(pairs), batch_rows):
        rows = slice(start, start + batch_rows)
        side = None if pairs.side_info is None else torch.from_numpy(np.ascontiguousarray(pairs.side_info[rows]))
        outputs.append(net.forward_raw(torch.from_numpy(np.ascontiguousarray(pairs.old[rows])), side)[0].numpy())
    return np.concatenate(outputs)


def _fit_uncertainty_head(net, objective, data, config: TransformConfig, generator) -> None:
    """When the closed form (epoch 0) wins, train only the uncertainty head on the frozen map (a
    small linear problem: 10x the lr, which the joint training would not stand)."""
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    net.unc.reset_parameters()
    for parameter in net.unc.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(net.unc.parameters(), lr=10 * config.lr, weight_decay=config.weight_decay)
    schedule = _schedule(optimizer, config, epoch_steps(len(data["old"]), config))
    for _ in range(config.epochs):
        _train_epoch(net, objective, data, optimizer, schedule, config, generator)


def _tensors(net, pairs: Pairs, objective: Objective) -> dict:
    target = (pairs.new - net.new_mean.numpy()) / float(net.new_scale)
    labels = None
    if objective.class_means is not None:
        labels = torch.tensor([objective.label_index.get(int(c), -100) for c in pairs.labels])
    return {"old": torch.from_numpy(np.ascontiguousarray(pairs.old)),
            "side": None if pairs.side_info is None else torch.from_numpy(np.ascontiguousarray(pairs.side_info)),
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)), "labels": labels}


def epoch_steps(rows: int, config: TransformConfig) -> int:
    """Optimizer steps in one epoch: a pass over the train pairs, repeated until the epoch has at
    least ``config.min_epoch_steps`` steps. An epoch sized by passes alone would leave small sets
    almost untrained (1,131 pairs at batch 512: 3 steps, 36 in 12 epochs, where 45,000 pairs get
    1,056); with the floor every set gets at least epochs x min_epoch_steps steps."""
    per_pass = max(1, math.ceil(rows / config.batch_size))
    return per_pass * max(1, math.ceil(config.min_epoch_steps / per_pass))


def _schedule(optimizer, config: TransformConfig, steps_per_epoch: int):
    warmup, total = config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _noisy(inputs: torch.Tensor | None, scale: torch.Tensor, noise: float, generator) -> torch.Tensor | None:
    if inputs is None or not noise:
        return inputs
    return inputs + noise * scale * torch.randn(inputs.shape, generator=generator)


def _train_epoch(net, objective, data, optimizer, schedule, config: TransformConfig, generator) -> float:
    """One epoch (``epoch_steps``: whole shuffled passes until min_epoch_steps); mean loss per row."""
    net.train()
    rows_in_set, batch_size = len(data["old"]), config.batch_size
    passes = epoch_steps(rows_in_set, config) // max(1, math.ceil(rows_in_set / batch_size))
    total, rows = 0.0, 0
    for _ in range(passes):
        order = torch.randperm(rows_in_set, generator=generator)
        for start in range(0, len(order), batch_size):
            batch = {k: (None if v is None else v[order[start:start + batch_size]]) for k, v in data.items()}
            total += _train_step(net, objective, batch, optimizer, schedule, config, generator) * len(batch["old"])
            rows += len(batch["old"])
    return total / rows


def _train_step(net, objective, batch, optimizer, schedule, config: TransformConfig, generator) -> float:
    out, log_var = net(_noisy(batch["old"], net.old_scale, config.input_noise, generator),
                       _noisy(batch["side"], net.side_scale, config.input_noise, generator))
    loss = objective.total(objective.per_row(out, batch["target"], batch["labels"]), log_var)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()
    return float(loss.detach())
