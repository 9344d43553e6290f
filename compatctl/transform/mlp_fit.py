"""Training loop of the ``mlp`` transform: AdamW, warm-up + cosine schedule, early stopping."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch.nn import functional as F

from compatctl.transform.config import TransformConfig
from compatctl.transform.mlp import ForwardTransformNet, build_net, export_numpy
from compatctl.transform.pairs import Pairs


class Objective:
    """Per-row loss L_i (alignment + discriminative) and the FastFill total."""

    def __init__(self, net: ForwardTransformNet, train: Pairs, config: TransformConfig):
        self.net, self.config = net, config
        self.class_means = None
        if config.discriminative_weight and train.labels is not None:
            classes = np.unique(train.labels)
            self.label_index = {int(c): i for i, c in enumerate(classes)}
            means = np.stack([train.new[train.labels == c].mean(0) for c in classes])
            self.class_means = F.normalize(torch.from_numpy(means), dim=1)

    def alignment(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-row alignment: squared error in the scaled space, or 1 − cosine in the raw space."""
        if self.config.loss == "mse":
            return ((out - target) ** 2).mean(1)
        raw = lambda t: t * self.net.new_scale + self.net.new_mean  # noqa: E731
        return 1.0 - F.cosine_similarity(raw(out), raw(target), dim=1)

    def per_row(self, out, target, labels) -> torch.Tensor:
        loss = self.alignment(out, target)
        if self.class_means is not None:
            raw = out * self.net.new_scale + self.net.new_mean
            logits = F.normalize(raw, dim=1) @ self.class_means.T / self.config.disc_temperature
            loss = loss + self.config.discriminative_weight * F.cross_entropy(
                logits, labels, reduction="none", label_smoothing=self.config.label_smoothing)
        return loss

    def total(self, per_row: torch.Tensor, log_var: torch.Tensor | None) -> torch.Tensor:
        if log_var is None:
            return per_row.mean()
        return (0.5 * torch.exp(-log_var) * per_row + self.config.mu_unc * log_var).mean()


def fit_mlp(train: Pairs, validation: Pairs, config: TransformConfig, progress=None) -> tuple[dict, dict]:
    """Train the FCT-family transform on ``train``; keep the epoch best on ``validation``.

    Returns (numpy tensors for Transform.apply, architecture dict incl. epochs run and best epoch).
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    net = build_net(train, config)
    objective = Objective(net, train, config)
    data = _tensors(net, train, objective)
    val_data = _tensors(net, validation, objective) if len(validation) else None
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train) / config.batch_size))
    schedule = _schedule(optimizer, config, steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    start_loss = _validation_loss(net, objective, val_data) if val_data else math.inf
    best = (start_loss, 0, copy.deepcopy(net.state_dict()))  # epoch 0 = the ridge solution
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        train_loss = _train_epoch(net, objective, data, optimizer, schedule, config, generator)
        val_loss = _validation_loss(net, objective, val_data) if val_data else train_loss
        if val_loss < best[0]:
            best = (val_loss, epoch, copy.deepcopy(net.state_dict()))
        if progress:
            progress({"event": "epoch", "epoch": epoch, "epochs": config.epochs, "loss": train_loss,
                      "val_loss": val_loss, "best_epoch": best[1]})
        if epoch - best[1] >= config.patience:
            break
    net.load_state_dict(best[2])
    architecture = {"branch_width": config.branch_width, "width": config.width, "blocks": config.blocks,
                    "norm": "layernorm", "skip": "linear", "epochs_run": epoch, "best_epoch": best[1],
                    "best_val_loss": best[0]}
    return export_numpy(net), architecture


def _tensors(net, pairs: Pairs, objective: Objective) -> dict:
    target = (pairs.new - net.new_mean.numpy()) / float(net.new_scale)
    labels = None
    if objective.class_means is not None:
        labels = torch.tensor([objective.label_index.get(int(c), -100) for c in pairs.labels])
    return {"old": torch.from_numpy(np.ascontiguousarray(pairs.old)),
            "side": None if pairs.side_info is None else torch.from_numpy(np.ascontiguousarray(pairs.side_info)),
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32)), "labels": labels}


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
    net.train()
    order = torch.randperm(len(data["old"]), generator=generator)
    total, rows, batch_size = 0.0, 0, config.batch_size
    for start in range(0, len(order), batch_size):
        batch = {k: (None if v is None else v[order[start:start + batch_size]]) for k, v in data.items()}
        out, log_var = net(_noisy(batch["old"], net.old_scale, config.input_noise, generator),
                           _noisy(batch["side"], net.side_scale, config.input_noise, generator))
        loss = objective.total(objective.per_row(out, batch["target"], batch["labels"]), log_var)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        total += float(loss.detach()) * len(batch["old"])
        rows += len(batch["old"])
    return total / rows


@torch.no_grad()
def _validation_loss(net, objective, data, batch_rows: int = 8192) -> float:
    """The model-selection metric: the training objective (alignment, discriminative term and,
    with uncertainty, FastFill's weighting) on the validation rows, without input noise."""
    net.eval()
    total = 0.0
    for start in range(0, len(data["old"]), batch_rows):
        rows = slice(start, start + batch_rows)
        out, log_var = net(data["old"][rows], None if data["side"] is None else data["side"][rows])
        labels = None if data["labels"] is None else data["labels"][rows]
        total += float(objective.total(objective.per_row(out, data["target"][rows], labels), log_var)) * len(out)
    return total / len(data["old"])
