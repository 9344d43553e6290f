"""The typed config of `compatctl fit-transform` (YAML file + ``key=value`` overrides)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from compatctl.config import load_config, option
from compatctl.errors import ConfigError

KINDS = ("linear", "procrustes", "mlp")


@dataclasses.dataclass
class TransformConfig:
    """How to fit a forward transform old embedding (+ side-info) -> new embedding.

    ``kind`` picks the method (see compatctl.transform.fit.FITTERS). The training keys apply to
    ``mlp`` only; ``ridge`` applies to ``linear``.
    """

    kind: str = option("mlp", choices=KINDS, help="linear | procrustes | mlp (FCT family)")
    uncertainty: bool = option(False, help="FastFill head: per-row log-variance (mlp only)")
    loss: str = option("mse", choices=("mse", "cosine"), help="alignment loss to the new embeddings")
    # mlp architecture
    branch_width: int = option(256, min=8, max=16384, help="width of the old and side-info branches")
    width: int = option(256, min=8, max=16384, help="width of the residual trunk")
    blocks: int = option(2, min=0, max=64, help="residual blocks (pre-LayerNorm, 2 linear layers each)")
    # mlp training
    epochs: int = option(12, min=1, max=10000, help="12 x 50k pairs fit in ~20 s on 2 cores")
    batch_size: int = option(512, min=8, max=1 << 20)
    lr: float = option(2e-3, min=0.0, max=10.0)
    weight_decay: float = option(1e-4, min=0.0, max=10.0)
    warmup_epochs: int = option(1, min=0, max=1000)
    patience: int = option(4, min=1, max=10000, help="epochs without validation improvement before stopping")
    input_noise: float = option(0.0, min=0.0, max=10.0,
                                help="Gaussian noise added to standardized inputs while training (a stand-in "
                                     "for the image augmentation stored embeddings lack)")
    discriminative_weight: float | None = option(
        None, min=0.0, max=100.0,
        help="weight of the class-mean classifier term; null = 1.0 when labels exist, else 0")
    label_smoothing: float = option(0.1, min=0.0, max=0.99)
    disc_temperature: float = option(0.1, min=1e-4, max=100.0, help="cosine-logit temperature of that term")
    mu_unc: float = option(0.5, min=0.0, max=100.0, help="FastFill's weight on the log-variance s")
    # closed form
    ridge: float = option(1e-3, min=0.0, max=1e6, help="linear: ridge strength relative to the mean eigenvalue")
    # data
    validation_fraction: float = option(0.1, min=0.0, max=0.9)
    max_validation_rows: int = option(5000, min=1, help="cap on rows used for the validation retrieval metric")
    min_matched: int = option(100, min=1, help="fewest id-matched old/new pairs accepted")
    seed: int = option(0)
    threads: int | None = option(None, min=1, max=1024, help="torch threads for training (null = torch default)")


def load_transform_config(path: Path | None = None, overrides: list[str] | None = None) -> TransformConfig:
    """Load a TransformConfig from an optional YAML file and ``key=value`` overrides.

    Raises ConfigError listing every problem (including combinations that cannot work).
    """
    config = load_config(TransformConfig, path, overrides)
    check_combination(config, str(path) if path else "config")
    return config


def check_combination(config: TransformConfig, source: str = "config") -> None:
    """Reject key combinations that no kind supports (all problems at once)."""
    problems = []
    if config.uncertainty and config.kind != "mlp":
        problems.append(f"'uncertainty: true' needs kind: mlp (got kind: {config.kind}); "
                        "the closed-form kinds have no uncertainty head")
    if problems:
        raise ConfigError(problems, source)
