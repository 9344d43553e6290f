"""Embedding models: a registered backbone, an embedding head, an optional BT² basis, a classifier.

``feature = head(backbone(x))`` has ``embedding_dim + extra_dims`` dims; ``embedding`` is that
feature, or its image under a learnable orthogonal basis transformation (BT², Zhou et al. 2023)
when ``basis_transform`` is set; ``logits = classifier(feature)``. A checkpoint is a
safetensors file of the full state dict plus metadata (the ModelSpec among it), so
:func:`load_model` rebuilds the model from the file alone through the ``BACKBONES`` registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from compatctl.errors import BadInputError, IntegrityError
from compatctl.models.backbones import BACKBONES


@dataclasses.dataclass
class ModelSpec:
    """Everything needed to rebuild the architecture (stored in every checkpoint)."""

    arch: str
    embedding_dim: int
    num_classes: int
    in_channels: int = 3
    extra_dims: int = 0
    basis_transform: bool = False


class ModelOutput(NamedTuple):
    feature: torch.Tensor
    embedding: torch.Tensor
    logits: torch.Tensor


class EmbeddingModel(nn.Module):
    """Backbone + linear embedding head (+ orthogonal basis) + linear classifier."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.backbone = BACKBONES[spec.arch](spec.in_channels)
        width = spec.embedding_dim + spec.extra_dims
        self.head = nn.Linear(self.backbone.feature_dim, width)
        self.basis = None
        if spec.basis_transform:
            self.basis = nn.utils.parametrizations.orthogonal(nn.Linear(width, width, bias=False))
        self.classifier = nn.Linear(width, spec.num_classes)

    @property
    def embedding_width(self) -> int:
        return self.spec.embedding_dim + self.spec.extra_dims

    def forward(self, x: torch.Tensor) -> ModelOutput:
        feature = self.head(self.backbone(x))
        embedding = self.basis(feature) if self.basis is not None else feature
        return ModelOutput(feature, embedding, self.classifier(feature))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of a normalized float batch (no classifier)."""
        feature = self.head(self.backbone(x))
        return self.basis(feature) if self.basis is not None else feature


def build_model(spec: ModelSpec) -> EmbeddingModel:
    """A freshly initialised model. Raises BadInputError for an unknown arch or bad sizes."""
    if spec.arch not in BACKBONES:
        raise BadInputError(f"unknown architecture {spec.arch!r}; valid ones: {', '.join(BACKBONES)}")
    if spec.embedding_dim < 1 or spec.extra_dims < 0 or spec.num_classes < 1:
        raise BadInputError(f"model sizes must be positive: embedding_dim={spec.embedding_dim}, "
                            f"extra_dims={spec.extra_dims}, num_classes={spec.num_classes}")
    if spec.in_channels not in (1, 3):
        raise BadInputError(f"in_channels={spec.in_channels}: images must have 1 or 3 channels")
    return EmbeddingModel(spec)


def save_model(path: Path | str, model: EmbeddingModel, *, config: dict, normalization: dict | None,
               lineage: dict, class_names: list[str] | None = None, extra: dict | None = None,
               image_shape: tuple[int, int, int] | None = None) -> str:
    """Write ``model`` as a safetensors checkpoint; return its fingerprint (a hash of the weights).

    The full state dict is stored (for a BT² basis, the parametrization's ``original`` and
    ``base``), so the loaded model computes bit-identical embeddings.
    """
    from compatctl.store import save_artifact

    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    meta = {"spec": dataclasses.asdict(model.spec), "arch": model.spec.arch,
            "embedding_dim": model.spec.embedding_dim, "embedding_width": model.embedding_width,
            "num_classes": model.spec.num_classes,
            "image_shape": list(image_shape) if image_shape is not None else None,
            "config": config, "normalization": normalization, "lineage": lineage,
            "class_names": class_names, "extra": extra or {}}
    return save_artifact(Path(path), tensors, kind="model", meta=meta)


def load_model(path: Path | str, device: str = "cpu") -> tuple[EmbeddingModel, dict]:
    """Rebuild a checkpoint in eval mode on ``device``; return (model, header).

    Raises BadInputError when ``path`` is not a compatctl model, IntegrityError when its
    weights do not fit its recorded architecture.
    """
    from compatctl.store import expect_kind

    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"{path}: is a directory, not a model; pass the model .safetensors "
                            "(e.g. DIR/model.safetensors written by train-new)")
    header = expect_kind(path, "model")
    try:
        spec = ModelSpec(**header["spec"])
    except (KeyError, TypeError) as exc:
        raise IntegrityError(f"{path}: model metadata has no valid 'spec' ({exc}); re-create the model") from None
    model = build_model(spec)
    state = load_state(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise IntegrityError(f"{path}: weights do not match architecture {spec.arch!r} "
                             f"({str(exc).splitlines()[0]}); re-create the model") from None
    return model.to(device).eval(), header


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; other values are checked and returned."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise BadInputError(f"--device {device!r}: use auto, cpu or cuda")
    return device


def load_state(path: Path | str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The weights (state dict) of a model checkpoint, without building the model."""
    from compatctl.store import expect_kind, load_arrays

    expect_kind(path, "model")
    return {name: torch.from_numpy(array).to(device) for name, array in load_arrays(path).items()}


def embed_images(model: EmbeddingModel, header: dict, images: np.ndarray, *, batch_size: int = 256,
                 device: str = "cpu", progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Embeddings float32 [N, width] of uint8 NHWC ``images``, normalized as recorded in ``header``.

    No augmentation; runs under ``torch.inference_mode``. Batches go to ``device`` as uint8 and
    results stay there until the end, so a GPU is not stalled by a copy back per batch.
    ``progress(done, total)`` after each batch is queued.
    """
    from compatctl.data.transforms import Normalization, pixel_normalizer

    scale = pixel_normalizer(Normalization.from_dict(header.get("normalization")), device)
    out = torch.empty((len(images), model.embedding_width), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size]))
            batch = chunk.to(device, non_blocking=True).permute(0, 3, 1, 2).contiguous()
            out[start:start + len(batch)] = model.embed(scale(batch)).float()
            if progress is not None:
                progress(start + len(batch), len(images))
        return out.cpu().numpy()


__all__ = ["BACKBONES", "EmbeddingModel", "ModelOutput", "ModelSpec", "build_model", "embed_images",
           "load_model", "load_state", "resolve_device", "save_model"]
