"""Everything a run needs before its first step: device, data, old/teacher models, the new model.

All input checks of `train-new` happen here, before any training, and every problem is named
in one BadInputError: a missing --old, data classes that do not include the old model's
classes, class names that disagree, and the method's own checks (embedding dims, classifier
coverage).

The held-out slice of the self-check (train/selfcheck.py) is split off here, before the
normalization statistics are computed, so the model never sees it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compatctl.errors import BadInputError
from compatctl.train.config import TrainConfig
from compatctl.train.methods import FrozenModel, Method, Setup
from compatctl.train.selfcheck import HeldOut, ids_digest, split_positions


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (1 << 32))


def load_frozen(path: Path | str, device: torch.device, what: str) -> FrozenModel:
    """Load a model read-only (eval mode, no gradients); ``what`` names it in errors (e.g. '--old')."""
    from compatctl.data.transforms import Normalization
    from compatctl.models import load_model

    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{what} {path}: not found; pass the model.safetensors written by train-new")
    model, header = load_model(path, str(device))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    classes = header.get("extra", {}).get("classes") or list(range(int(header.get("num_classes", 0))))
    return FrozenModel(path, model, header, Normalization.from_dict(header.get("normalization")),
                       [int(c) for c in classes], int(header["embedding_width"]))


def _old_problems(old: FrozenModel, classes: list[int], class_names: list[str], channels: int) -> list[str]:
    problems = []
    missing = sorted(set(old.classes) - set(classes))
    if missing:
        problems.append(f"the data classes {classes} do not include the old model's classes {missing}; "
                        "the new model must be trained on every class the old one knew (set classes to include them)")
    old_names = old.header.get("class_names") or []
    clash = [c for c in old.classes if c < len(old_names) and c < len(class_names) and old_names[c] != class_names[c]]
    if clash:
        problems.append(f"class names differ between the old model and the data for labels {clash} "
                        f"(old {[old_names[c] for c in clash]}, data {[class_names[c] for c in clash]}); "
                        "use the dataset the old model was trained on")
    old_shape = old.header.get("image_shape")
    if old_shape and old_shape[-1] != channels:
        problems.append(f"the old model takes {old_shape[-1]}-channel images but the data has {channels} channels")
    return problems


def _load_old(config: TrainConfig, method: Method, old_model: Path | None, device: torch.device) -> FrozenModel | None:
    if method.needs_old and old_model is None:
        raise BadInputError(f"method {config.method!r} needs the old model: pass --old OLD_MODEL "
                            "(the model.safetensors it must stay compatible with)")
    if old_model is None:
        return None
    return load_frozen(old_model, device, "--old")


def hold_out(data, config: TrainConfig):
    """(training ImageData, HeldOut or None): the self-check's slice split off ``data``."""
    train, held = split_positions(data.labels, config.validation_fraction, config.seed)
    if len(held) == 0:
        return data, None
    held_data = data.take(held)
    return data.take(train), HeldOut(held_data.images, held_data.labels, held_data.ids, ids_digest(held_data.ids))


def build_setup(config: TrainConfig, method: Method, old_model: Path | None) -> Setup:
    """The training Setup of :func:`prepare_run` (without the held-out slice)."""
    return prepare_run(config, method, old_model)[0]


def prepare_run(config: TrainConfig, method: Method, old_model: Path | None) -> tuple[Setup, HeldOut | None]:
    """Load data and models for a run and check them together; the new model is freshly initialised.

    Returns the Setup (training images only) and the self-check's held-out slice (None when
    ``validation_fraction`` is 0). Raises BadInputError naming every problem found.
    """
    from compatctl.data import load_data, resolve_classes, select_classes
    from compatctl.data.transforms import compute_normalization, to_tensor
    from compatctl.models import ModelSpec, build_model, resolve_device

    device = torch.device(resolve_device(config.device))
    old = _load_old(config, method, old_model, device)
    teacher = None
    if config.method == "bt2" and config.bt2.teacher:
        teacher = load_frozen(config.bt2.teacher, device, "bt2.teacher")
    data = load_data(config.data, "train")
    classes = resolve_classes(config.classes, data.num_classes)
    data = select_classes(data, classes)
    problems = _old_problems(old, classes, data.class_names, data.image_shape[-1]) if old is not None else []
    if problems:
        raise BadInputError("; ".join(problems))
    data, held_out = hold_out(data, config)
    _seed_everything(config.seed)
    num_classes = max(classes) + 1  # labels keep the dataset's numbering
    spec = ModelSpec(config.arch, config.embedding_dim, num_classes, in_channels=data.image_shape[-1],
                     **method.model_shape(config, old))
    setup = Setup(config=config, device=device, normalization=compute_normalization(data.images),
                  images=to_tensor(data.images).to(device), labels=torch.from_numpy(data.labels).to(device),
                  classes=classes, num_classes=num_classes, class_names=list(data.class_names),
                  image_shape=data.image_shape, new_model=build_model(spec).to(device), old=old, teacher=teacher)
    problems = method.check(setup)  # _load_old already refused a missing --old
    if problems:
        raise BadInputError("; ".join(problems))
    return setup, held_out


def lineage_of(config: TrainConfig, setup: Setup) -> dict:
    """Lineage metadata: the method, the old model, every ancestor and what this model is compatible
    with (see compatctl/series.py)."""
    from compatctl.series import lineage_for

    old = setup.old
    lineage = lineage_for(config.method, old.header if old else None, old.embedding_width if old else None)
    if setup.teacher is not None:
        lineage["teacher"] = setup.teacher.header.get("fingerprint")
    return lineage


def checkpoint_state(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """The state dict stored in a model checkpoint (for --resume)."""
    from compatctl.models import load_state

    if not Path(path).is_file():
        raise BadInputError(f"{path}: missing; the run cannot be resumed, train again without --resume")
    return load_state(path, device)
