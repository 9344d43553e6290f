"""Resumable training state without pickle: tensors in safetensors, scalars in its JSON header.

``DIR/train_state.safetensors`` holds the optimizer's per-parameter tensors (momentum buffers,
Adam moments) and, in the header, the epochs done, the optimizer's scalar settings, the full
config, the old model's fingerprint, the run's first loss (the divergence check's reference)
and the digest of the self-check's held-out ids (a resume must hold out the same images).
The learning rate is a pure function of the step and every epoch re-seeds its shuffling and
augmentation from ``(seed, epoch)``, so no scheduler or RNG state is needed beyond the epoch
number to continue bit-for-bit. The model weights are in ``DIR/model.safetensors`` of the same
epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from compatctl.errors import BadInputError, IntegrityError
from compatctl.store import atomic_write_bytes

STATE_FILE = "train_state.safetensors"
META_KEY = "compatctl_train_state"
STATE_VERSION = 1


def save_state(out_dir: Path, optimizer: torch.optim.Optimizer, info: dict) -> None:
    """Atomically write the optimizer state and ``info`` (JSON-serializable) to DIR/train_state.safetensors."""
    from safetensors.torch import save

    tensors, scalars = {}, {}
    state = optimizer.state_dict()
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    meta = {"version": STATE_VERSION, "param_groups": state["param_groups"], "scalars": scalars, **info}
    atomic_write_bytes(out_dir / STATE_FILE, save(tensors, metadata={META_KEY: json.dumps(meta)}))


def read_state(out_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(info, tensors) of DIR/train_state.safetensors. Raises BadInputError when there is none."""
    from safetensors.torch import load_file
    from safetensors import safe_open

    path = out_dir / STATE_FILE
    if not path.is_file():
        raise BadInputError(f"{out_dir}: no training state to resume ({STATE_FILE} is missing); "
                            "run without --resume to start training")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})[META_KEY])
        tensors = load_file(str(path))
    except Exception as exc:
        raise IntegrityError(f"{path}: unreadable training state ({exc}); delete {out_dir} and train again") from None
    if meta.get("version") != STATE_VERSION:
        raise BadInputError(f"{path}: training state version {meta.get('version')!r} is not supported; "
                            "train again without --resume")
    return meta, tensors


def restore_optimizer(optimizer: torch.optim.Optimizer, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Load the state written by :func:`save_state` into ``optimizer`` (same parameters, same order)."""
    per_param: dict[int, dict] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        per_param.setdefault(int(index), {})[key] = tensor
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        per_param.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
