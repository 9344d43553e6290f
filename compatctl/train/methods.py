"""Training methods: a registry from method name to how it shapes the model and builds its loss.

Each method turns a raw uint8 batch into model inputs (``prepare``: augmentation and transfer,
the "data" side of a step) and the inputs into a loss (``loss``: the forward passes). Methods:

- ``independent``: cross-entropy only (also how the first model of a lineage is trained);
- ``l2``: + weight · ||φ_new(x) − φ_old(x)||² on the same augmented image (same dims);
- ``bct``: + weight · CE(s · cos(φ_new(x), row_c), y), the influence loss through a frozen
  classifier built from the old model. Its rows: with ``bct.synthesize: all`` (default) the mean
  old embedding of every class over the new training set; ``missing`` (the paper) keeps the old
  classifier's rows for the classes it was trained on and synthesizes only the others; ``none``
  uses the old classifier alone, which must then cover every listed class. ``bct.classifier_scale``
  s > 0 (default 4) gives cosine logits (bias dropped); 0 keeps the paper's raw logits
  W_old φ_new(x) + b. Why cosine at a low scale: retrieval compares directions, and the old
  class means of classes the old model never saw are often nearly parallel to seen ones (cos
  0.96-0.99 on CIFAR-10). Raw logits can only separate such rows by growing φ_new along their
  small difference, which pulls it off the old geometry or diverges (NaN within the first epoch on
  the digits); bounded cosine logits at a low scale keep the softmax soft, so the gradient
  points at the own class mean. Measured with ``benchmarks/robustness.py`` (README).
  ``bct.match_norms`` rescales synthesized rows to the old rows' mean norm (raw form only);
- ``bt2``: the model gets ``bt2.extra_dims`` extra dims and an orthonormal basis
  transformation; its first d_old embedding dims are the compatible part. Loss: CE on the base
  feature + λ3 (1 − cos(compatible, φ_old)) + λ2 CE(s · cos(M, compatible), y), M the class
  means of old embeddings (all classes), s = ``bt2.classifier_scale`` (default 4; 16 let this term
  swamp the main CE where old class means are near-parallel, and 0, raw dot products, let the
  compatible part's norm run away), + λ1 (1 − cos(feature, φ'_new)) when ``bt2.teacher`` is set
  (a teacher narrower than the feature is matched to the feature's first dims, so the usual
  independent new model of the old model's width can serve). Along a series (--old itself BT²
  from an earlier model) the same two terms also hold each earlier model's prefix
  (``bt2.keep_ancestor_prefixes``, compatctl/series.py);
- ``contrastive``: SimCLR NT-Xent on two random views of each image; labels unused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from compatctl.data.transforms import Normalization, augment, normalize, standardizer
from compatctl.errors import BadInputError
from compatctl.train.config import TrainConfig
from compatctl.train.views import contrastive_view, nt_xent


@dataclasses.dataclass
class FrozenModel:
    """A trained model used read-only during training (the old model, or a BT² teacher)."""

    path: Path
    model: torch.nn.Module
    header: dict
    normalization: Normalization | None
    classes: list[int]
    embedding_width: int

    @torch.no_grad()
    def embed(self, views_uint8: torch.Tensor) -> torch.Tensor:
        """Embeddings of a uint8 NCHW batch already on the model's device."""
        return self.model.embed(normalize(views_uint8, self.normalization))


@dataclasses.dataclass
class Setup:
    """What a method may look at when it builds its loss."""

    config: TrainConfig
    device: torch.device
    normalization: Normalization
    images: torch.Tensor  # uint8 NCHW, all training images (on ``device``)
    labels: torch.Tensor  # int64, global class indices (on ``device``)
    classes: list[int]
    num_classes: int
    class_names: list[str] = dataclasses.field(default_factory=list)
    image_shape: tuple[int, int, int] = (32, 32, 3)
    new_model: torch.nn.Module | None = None  # the model being trained (unwrapped)
    old: FrozenModel | None = None
    teacher: FrozenModel | None = None


@dataclasses.dataclass
class StepResult:
    loss: torch.Tensor
    correct: torch.Tensor  # how many predictions were right (classification or contrastive pairing)
    count: int


@dataclasses.dataclass
class MethodLoss:
    prepare: Callable[[torch.Tensor, torch.Tensor, torch.Generator], Any]
    loss: Callable[[torch.nn.Module, Any], StepResult]


@dataclasses.dataclass(frozen=True)
class Method:
    needs_old: bool
    uses_classifier: bool  # False: the classifier gets no gradient (DDP must know)
    model_shape: Callable[[TrainConfig, FrozenModel | None], dict]  # ModelSpec keyword overrides
    check: Callable[[Setup], list[str]]
    build: Callable[[Setup], MethodLoss]


# ---- shared pieces ---------------------------------------------------------------------------

def _plain_shape(config: TrainConfig, old: FrozenModel | None) -> dict:
    return {}


def _no_checks(setup: Setup) -> list[str]:
    return []


def _same_dims(setup: Setup) -> list[str]:
    d_old, d_new = setup.old.embedding_width, setup.config.embedding_dim
    if d_old == d_new:
        return []
    return [f"method {setup.config.method} compares new and old embeddings directly, so embedding_dim "
            f"({d_new}) must equal the old model's embedding width ({d_old}); set embedding_dim={d_old} "
            "or use method=bt2, which adds dimensions"]


def _augmented(setup: Setup):
    def prepare(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
        return augment(images, generator, setup.config.augment), labels
    return prepare


def _cross_entropy(setup: Setup, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, label_smoothing=setup.config.label_smoothing)


def _supervised(setup: Setup, extra: Callable | None = None) -> MethodLoss:
    """CE on augmented views, plus ``extra(output, views, labels)`` when given."""

    def loss(model: torch.nn.Module, inputs) -> StepResult:
        views, labels = inputs
        output = model(normalize(views, setup.normalization))
        total = _cross_entropy(setup, output.logits, labels)
        if extra is not None:
            total = total + extra(output, views, labels)
        correct = (output.logits.argmax(dim=1) == labels).sum()
        return StepResult(total, correct, labels.numel())

    return MethodLoss(_augmented(setup), loss)


@torch.no_grad()
def class_mean_embeddings(frozen: FrozenModel, images: torch.Tensor, labels: torch.Tensor,
                          num_classes: int, batch_size: int = 512) -> torch.Tensor:
    """[num_classes, d] mean embedding of each class by ``frozen`` over un-augmented ``images``.

    Classes without images get a zero row.
    """
    sums = torch.zeros(num_classes, frozen.embedding_width, device=images.device)
    counts = torch.zeros(num_classes, device=images.device)
    for start in range(0, len(images), batch_size):
        embeddings = frozen.embed(images[start:start + batch_size])
        batch_labels = labels[start:start + batch_size]
        sums.index_add_(0, batch_labels, embeddings.float())
        counts.index_add_(0, batch_labels, torch.ones_like(batch_labels, dtype=torch.float32))
    return sums / counts.clamp(min=1).unsqueeze(1)


# ---- l2 ---------------------------------------------------------------------------------------

def _build_l2(setup: Setup) -> MethodLoss:
    weight = setup.config.l2.weight

    def extra(output, views, labels):
        old_embeddings = setup.old.embed(views)
        return weight * (output.embedding - old_embeddings).pow(2).sum(dim=1).mean()

    return _supervised(setup, extra)


# ---- bct --------------------------------------------------------------------------------------

def old_classifier(frozen: FrozenModel) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [C_old, d], bias [C_old] or None) of the frozen model's classifier."""
    layer = frozen.model.classifier
    bias = layer.bias.detach() if getattr(layer, "bias", None) is not None else None
    return layer.weight.detach(), bias


def _bct_checks(setup: Setup) -> list[str]:
    problems = _same_dims(setup)
    weight, _ = old_classifier(setup.old)
    covered = set(range(weight.shape[0]))
    missing = [c for c in setup.old.classes if c not in covered]
    if missing:
        problems.append(f"old model {setup.old.path}: its classifier has {weight.shape[0]} rows, which do not cover "
                        f"the classes it lists as trained {missing}; pass a model written by compatctl train-new")
    uncovered = sorted(set(setup.classes) - set(setup.old.classes))
    if setup.config.bct.synthesize == "none" and uncovered:
        problems.append(f"old model {setup.old.path}: its classifier covers classes {setup.old.classes} but the "
                        f"listed classes also include {uncovered}; set bct.synthesize=missing to synthesize "
                        "their rows from old class means, or list only the old model's classes")
    return problems


def influence_classifier(setup: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen classifier of BCT's influence loss, one row per class of the new label space.

    Synthesized rows (old class means) are rescaled to the mean norm of the old classifier's rows
    when ``bct.match_norms`` is set.
    """
    config = setup.config.bct
    means = class_mean_embeddings(setup.old, setup.images, setup.labels, setup.num_classes)
    weight, bias = means.clone(), torch.zeros(setup.num_classes, device=means.device)
    old_weight, old_bias = old_classifier(setup.old)
    kept = torch.tensor(setup.old.classes, device=means.device, dtype=torch.long)
    old_weight = old_weight.to(means.device)
    if config.match_norms:
        target = old_weight[kept].norm(dim=1).mean()
        weight = F.normalize(weight, dim=1) * target
    if config.synthesize in ("missing", "none"):
        weight[kept] = old_weight[kept]
        if old_bias is not None:
            bias[kept] = old_bias[kept].to(means.device)
    return weight, bias


def _build_bct(setup: Setup) -> MethodLoss:
    weight, bias = influence_classifier(setup)
    config = setup.config.bct
    if config.classifier_scale > 0:  # cosine: bounded logits, so near-parallel rows cannot pull e far off
        weight = F.normalize(weight, dim=1)

    def influence_logits(embedding: torch.Tensor) -> torch.Tensor:
        if config.classifier_scale > 0:
            return config.classifier_scale * F.normalize(embedding, dim=1) @ weight.T
        return F.linear(embedding, weight, bias)

    def extra(output, views, labels):
        return config.weight * _cross_entropy(setup, influence_logits(output.embedding), labels)

    return _supervised(setup, extra)


# ---- bt2 --------------------------------------------------------------------------------------

def _bt2_shape(config: TrainConfig, old: FrozenModel | None) -> dict:
    return {"extra_dims": config.bt2.extra_dims, "basis_transform": True}


def _bt2_checks(setup: Setup) -> list[str]:
    config, problems = setup.config, []
    d_old = setup.old.embedding_width
    if config.embedding_dim != d_old:
        problems.append(f"method bt2 keeps the first d_old dims compatible, so embedding_dim ({config.embedding_dim}) "
                        f"must equal the old model's embedding width ({d_old}); the new embedding then has "
                        f"embedding_dim + bt2.extra_dims = {d_old + config.bt2.extra_dims} dims")
    if setup.teacher is not None:
        width = config.embedding_dim + config.bt2.extra_dims
        if setup.teacher.embedding_width > width:
            problems.append(f"bt2.teacher {setup.teacher.path}: embedding width {setup.teacher.embedding_width} "
                            f"is wider than the new feature ({width} = embedding_dim + bt2.extra_dims); "
                            "train the teacher with embedding_dim <= that width")
    return problems


def _cosine_distance(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(first, second, dim=1)).mean()


def _bt2_prefixes(setup: Setup) -> list[int]:
    """Widths whose prefix the BT² losses hold to the old model: d_old, and along a series every
    earlier compatible model's width (see compatctl/series.py)."""
    from compatctl.series import ancestor_prefixes

    d_old = setup.old.embedding_width
    if not setup.config.bt2.keep_ancestor_prefixes:
        return [d_old]
    return [d_old, *ancestor_prefixes(setup.old.header, d_old)]


def _build_bt2(setup: Setup) -> MethodLoss:
    config = setup.config.bt2
    prefixes = _bt2_prefixes(setup)
    raw_means = class_mean_embeddings(setup.old, setup.images, setup.labels, setup.num_classes)
    # cosine: raw dot products let the compatible part's norm run away
    class_means = {p: F.normalize(raw_means[:, :p], dim=1) if config.classifier_scale > 0 else raw_means[:, :p]
                   for p in prefixes}

    def class_logits(compatible: torch.Tensor, width: int) -> torch.Tensor:
        if config.classifier_scale > 0:
            return config.classifier_scale * F.normalize(compatible, dim=1) @ class_means[width].T
        return compatible @ class_means[width].T

    def extra(output, views, labels):
        old_embeddings = setup.old.embed(views)
        total = 0.0
        for width in prefixes:  # one step: just d_old; a series adds each earlier model's prefix
            compatible = output.embedding[:, :width]
            total = total + config.align_weight * _cosine_distance(compatible, old_embeddings[:, :width])
            total = total + config.old_classifier_weight * _cross_entropy(setup, class_logits(compatible, width),
                                                                          labels)
        if setup.teacher is not None:
            teacher = setup.teacher.embed(views)
            total = total + config.teacher_weight * _cosine_distance(output.feature[:, :teacher.shape[1]], teacher)
        return total

    return _supervised(setup, extra)


# ---- contrastive ------------------------------------------------------------------------------

def _build_contrastive(setup: Setup) -> MethodLoss:
    config = setup.config.contrastive
    standardize = standardizer(setup.normalization, setup.device)

    def view(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return standardize(contrastive_view(images, generator, min_scale=config.crop_scale,
                                            jitter=config.color_jitter, grayscale_prob=config.grayscale_prob))

    def prepare(images, labels, generator):
        return view(images, generator), view(images, generator)

    def loss(model, inputs) -> StepResult:
        first, second = inputs
        embeddings = model(torch.cat([first, second])).embedding
        total, correct = nt_xent(embeddings[:len(first)], embeddings[len(first):], config.temperature)
        return StepResult(total, correct, 2 * len(first))

    return MethodLoss(prepare, loss)


REGISTRY: dict[str, Method] = {
    "independent": Method(False, True, _plain_shape, _no_checks, _supervised),
    "l2": Method(True, True, _plain_shape, _same_dims, _build_l2),
    "bct": Method(True, True, _plain_shape, _bct_checks, _build_bct),
    "bt2": Method(True, True, _bt2_shape, _bt2_checks, _build_bt2),
    "contrastive": Method(False, False, _plain_shape, _no_checks, _build_contrastive),
}


def get_method(name: str) -> Method:
    """The registry entry of ``name``; BadInputError listing the valid names otherwise."""
    if name not in REGISTRY:
        raise BadInputError(f"unknown method {name!r}; valid methods: {', '.join(REGISTRY)}")
    return REGISTRY[name]
