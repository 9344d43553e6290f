"""The ``mlp`` transform (FCT family) and its training loop. Imports torch; only the fitter uses it.

Architecture, why each piece:

- inputs are standardized per dim (folded into the first layers at export);
- old branch ``Linear+ReLU`` and, with side-info, a side-info branch ``Linear+ReLU`` (FCT's two
  branches; without side-info FCT feeds the old embedding to both, we simply use one);
- a ``merge`` layer into a trunk of ``blocks`` pre-LayerNorm residual blocks (LayerNorm, not
  BatchNorm: its affine folds into the next linear layer, so numpy apply needs no running stats
  and train/eval behave the same);
- ``head`` after a final LayerNorm, plus linear ``skip`` paths old -> new (and side-info -> new)
  initialised with a closed-form solution (the head starts at zero, its bias at the closed
  form's offset): epoch 0 *is* that closed form and the MLP learns the nonlinear residual;
- with ``uncertainty``: FastFill's linear head on the transformed embedding giving log-variance s.

Losses per row i (targets in a globally scaled space, so ``mse`` is the relative squared error):
L_i = align_i + w_disc · CE(cos(h_i, class means of new)/T, y_i)
      + w_con · CE_j(cos(h_i, new_j)/T_con, i)                    (in-batch InfoNCE)
      + w_struct · mean_j (cos(new_i, h_j) − cos(new_i, new_j))²   (in-batch similarity structure)
and, with uncertainty, total = mean(0.5·exp(−s_i)·L_i + μ_unc·s_i); else mean(L_i).
"""

from __future__ import annotations


import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from compatctl.transform.config import TransformConfig
from compatctl.transform.pairs import Pairs


class ForwardTransformNet(nn.Module):
    """h(old, side-info) -> new embedding (standardized output), optional log-variance."""

    def __init__(self, old_dim: int, new_dim: int, side_info_dim: int, config: TransformConfig):
        super().__init__()
        branch, width = config.branch_width, config.width
        self.old_in = nn.Linear(old_dim, branch)
        self.side_in = nn.Linear(side_info_dim, branch) if side_info_dim else None
        self.merge = nn.Linear(branch * (2 if side_info_dim else 1), width)
        self.blocks = nn.ModuleList(nn.ModuleDict({"norm": nn.LayerNorm(width), "fc1": nn.Linear(width, width),
                                                   "fc2": nn.Linear(width, width)}) for _ in range(config.blocks))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, new_dim)
        self.skip = nn.Linear(old_dim, new_dim, bias=False)
        self.side_skip = nn.Linear(side_info_dim, new_dim, bias=False) if side_info_dim else None
        self.unc = nn.Linear(new_dim, 1) if config.uncertainty else None
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        for name, dim in (("old", old_dim), ("side", side_info_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_scale", torch.ones(dim))
        self.register_buffer("new_mean", torch.zeros(new_dim))
        self.register_buffer("new_scale", torch.ones(()))

    def forward(self, old: torch.Tensor, side_info: torch.Tensor | None = None):
        """Standardized output [n, new_dim] and log-variance [n] (or None)."""
        x = (old - self.old_mean) / self.old_scale
        trunk = F.relu(self.old_in(x))
        if self.side_in is not None:
            side = F.relu(self.side_in((side_info - self.side_mean) / self.side_scale))
            trunk = torch.cat([trunk, side], dim=1)
        trunk = F.relu(self.merge(trunk))
        for block in self.blocks:
            trunk = trunk + block["fc2"](F.relu(block["fc1"](block["norm"](trunk))))
        out = self.head(self.norm(trunk)) + self.skip(x)
        if self.side_skip is not None:
            out = out + self.side_skip((side_info - self.side_mean) / self.side_scale)
        return out, (self.unc(out)[:, 0] if self.unc is not None else None)

    def forward_raw(self, old, side_info=None):
        """Output in the new embedding space (what numpy ``Transform.apply`` computes)."""
        out, log_var = self(old, side_info)
        return out * self.new_scale + self.new_mean, log_var


def export_numpy(net: ForwardTransformNet) -> dict[str, np.ndarray]:
    """Fold standardization and LayerNorm affines into [in, out] float32 weights (see artifact.py)."""
    g = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    tensors = {}
    mean, scale = g(net.old_mean), g(net.old_scale)
    tensors["old_in.weight"] = g(net.old_in.weight).T / scale[:, None]
    tensors["old_in.bias"] = g(net.old_in.bias) - (mean / scale) @ g(net.old_in.weight).T
    if net.side_in is not None:
        side_mean, side_scale = g(net.side_mean), g(net.side_scale)
        tensors["side_in.weight"] = g(net.side_in.weight).T / side_scale[:, None]
        tensors["side_in.bias"] = g(net.side_in.bias) - (side_mean / side_scale) @ g(net.side_in.weight).T
    tensors["merge.weight"], tensors["merge.bias"] = g(net.merge.weight).T, g(net.merge.bias)
    for i, block in enumerate(net.blocks):
        tensors[f"block{i}.fc1.weight"], tensors[f"block{i}.fc1.bias"] = _fold_norm(block["norm"], block["fc1"], g)
        tensors[f"block{i}.fc2.weight"], tensors[f"block{i}.fc2.bias"] = g(block["fc2"].weight).T, g(block["fc2"].bias)
    out_scale, out_mean = float(g(net.new_scale)), g(net.new_mean)
    head_weight, head_bias = _fold_norm(net.norm, net.head, g)
    skip = g(net.skip.weight).T / scale[:, None]
    tensors["head.weight"] = head_weight * out_scale
    tensors["head.bias"] = (head_bias - mean @ skip) * out_scale + out_mean
    tensors["skip.weight"] = skip * out_scale
    if net.side_skip is not None:
        side_skip = g(net.side_skip.weight).T / side_scale[:, None]
        tensors["head.bias"] -= (side_mean @ side_skip) * out_scale
        tensors["side_skip.weight"] = side_skip * out_scale
    if net.unc is not None:
        unc = g(net.unc.weight).T
        tensors["unc.weight"] = unc / out_scale
        tensors["unc.bias"] = g(net.unc.bias) - (out_mean / out_scale) @ unc
    return {name: np.ascontiguousarray(t, dtype=np.float32) for name, t in tensors.items()}


def _fold_norm(norm: nn.LayerNorm, linear: nn.Linear, g) -> tuple[np.ndarray, np.ndarray]:
    """LayerNorm affine folded into the next linear layer; columns centered (see artifact.py)."""
    weight = g(linear.weight).T
    folded = g(norm.weight)[:, None] * weight
    return folded - folded.mean(axis=0, keepdims=True), g(norm.bias) @ weight + g(linear.bias)


def build_net(train: Pairs, config: TransformConfig, base: dict[str, np.ndarray]) -> ForwardTransformNet:
    """A net standardized on ``train`` whose output equals the closed form ``base`` exactly.

    ``base`` holds closed-form tensors (``old.weight`` [old, new], ``bias``, optional
    ``side.weight``): they become the skip paths in standardized coordinates, their offset the
    head's bias; the head's weights are zero, so epoch 0 reproduces the closed form.
    """
    side_dim = 0 if train.side_info is None else train.side_info.shape[1]
    net = ForwardTransformNet(train.old.shape[1], train.new.shape[1], side_dim, config)
    new_mean = train.new.astype(np.float64).mean(0)
    new_scale = float(np.sqrt(((train.new - new_mean) ** 2).mean())) + 1e-12
    offset = base["bias"].astype(np.float64) - new_mean
    with torch.no_grad():
        for name, data, weight in (("old", train.old, "old.weight"), ("side", train.side_info, "side.weight")):
            if data is None:
                continue
            mean, scale = data.astype(np.float64).mean(0), data.astype(np.float64).std(0) + 1e-6
            getattr(net, f"{name}_mean").copy_(torch.from_numpy(mean))
            getattr(net, f"{name}_scale").copy_(torch.from_numpy(scale))
            closed = base[weight].astype(np.float64)
            skip = net.skip if name == "old" else net.side_skip
            skip.weight.copy_(torch.from_numpy((scale[:, None] * closed / new_scale).T))
            offset = offset + mean @ closed
        net.new_mean.copy_(torch.from_numpy(new_mean))
        net.new_scale.fill_(new_scale)
        net.head.bias.copy_(torch.from_numpy(offset / new_scale))
    return net
