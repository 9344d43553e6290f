"""A re-implementation of the FCT paper's transformation (Ramanujan et al. 2022), for comparison only.

Old branch 128->256->256 and side-info branch 128->256->256 (Linear+BatchNorm+ReLU), concatenated
(512) and mixed by 512->2048->2048->d_new; no residuals; without side-info the old embedding feeds
both branches. MSE loss; Adam lr 5e-4, weight decay 2^-15, batch 1024, 80 epochs, cosine schedule
with 5 linear warm-up epochs (updated per epoch), BatchNorm frozen (eval mode) from epoch 40.
"""

from __future__ import annotations

import math
import time

import numpy as np


def _block(torch_nn, inputs: int, outputs: int):
    return [torch_nn.Linear(inputs, outputs), torch_nn.BatchNorm1d(outputs), torch_nn.ReLU()]


def build_fct(old_dim: int, side_dim: int, new_dim: int):
    import torch
    from torch import nn

    class FCTTransformation(nn.Module):
        def __init__(self):
            super().__init__()
            self.old_branch = nn.Sequential(*_block(nn, old_dim, 256), *_block(nn, 256, 256))
            self.side_branch = nn.Sequential(*_block(nn, side_dim, 256), *_block(nn, 256, 256))
            self.mixer = nn.Sequential(*_block(nn, 512, 2048), *_block(nn, 2048, 2048), nn.Linear(2048, new_dim))

        def forward(self, old, side):
            return self.mixer(torch.cat([self.old_branch(old), self.side_branch(side)], dim=1))

    return FCTTransformation()


def _set_bn_eval(model) -> None:
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.eval()


def fit_fct_reference(train: dict, test: dict, side: bool, epochs: int = 80, batch: int = 1024):
    """Train the reference on ``train`` and map ``test``; returns (mapped, params, seconds, where)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    pick = lambda split: split["side"] if side else split["old"]  # noqa: E731
    model = build_fct(train["old"].shape[1], pick(train).shape[1], train["new"].shape[1]).to(device)
    params = sum(p.numel() for p in model.parameters())
    old, side_info, new = (torch.from_numpy(np.ascontiguousarray(a)).to(device)
                           for a in (train["old"], pick(train), train["new"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=2 ** -15)
    started = time.perf_counter()
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = 5e-4 * _lr_factor(epoch, epochs, warmup=5)
        model.train()
        if epoch >= epochs // 2:
            _set_bn_eval(model)
        order = torch.randperm(len(old), device=device)
        for start in range(0, len(order), batch):
            index = order[start:start + batch]
            if len(index) < 2:
                continue
            loss = torch.nn.functional.mse_loss(model(old[index], side_info[index]), new[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        mapped = model(torch.from_numpy(test["old"]).to(device), torch.from_numpy(pick(test)).to(device))
    return mapped.cpu().numpy(), params, seconds, f"{epochs} {device}"


def _lr_factor(epoch: int, epochs: int, warmup: int) -> float:
    if epoch < warmup:
        return (epoch + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))
