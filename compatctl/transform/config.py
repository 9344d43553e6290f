"""The typed config of `compatctl fit-transform` (YAML file + ``key=value`` overrides)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from compatctl.config import load_config, option
from compatctl.errors import ConfigError

KINDS = ("auto", "linear", "procrustes", "mlp")
DEFAULT_RIDGE_GRID = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
FALLBACK_RIDGE = 1e-3  # the ridge strength when there is no validation split to choose one


@dataclasses.dataclass
class TransformConfig:
    """How to fit a forward transform old embedding (+ side-info) -> new embedding.

    ``kind`` picks the method (see compatctl.transform.fit.FITTERS). ``auto`` fits every
    closed form and the mlp on top of the best one and keeps the best on the validation split.
    The training keys apply to the mlp only; ``ridge`` / ``ridge_grid`` to the linear map.
    """

    kind: str = option("auto", choices=KINDS,
                       help="auto (best of the closed forms and an mlp on top of the best one, on validation "
                            "retrieval top-1) | linear | procrustes | mlp (FCT family)")
    distance: str = option("cosine", choices=("cosine", "l2"),
                           help="distance of the validation retrieval metric that selects (as `eval --distance`)")
    uncertainty: bool = option(False, help="FastFill head: per-row log-variance (mlp and auto; auto then "
                                           "always returns an mlp)")
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
    min_epoch_steps: int = option(80, min=1, max=1 << 20,
                                  help="an epoch repeats passes over the train pairs until it has this many "
                                       "optimizer steps (small sets would otherwise get a few steps in all)")
    warmup_epochs: int = option(1, min=0, max=1000)
    patience: int = option(4, min=1, max=10000, help="epochs without validation improvement before stopping")
    input_noise: float = option(0.0, min=0.0, max=10.0,
                                help="Gaussian noise added to standardized inputs while training (a stand-in "
                                     "for the image augmentation stored embeddings lack)")
    input_noise_grid: list[float] = option(
        default_factory=lambda: [0.0, 1.0],
        help="auto trains the mlp once per value (as input_noise) and keeps the best on validation: noise "
             "regularises small pair sets, where the mlp otherwise overfits within an epoch or two")
    discriminative_weight: float | None = option(
        0.0, min=0.0, max=100.0,
        help="weight of the class-mean classifier term (opt-in: it raises mAP but can lower top-1); "
             "null is read as 0")
    label_smoothing: float = option(0.1, min=0.0, max=0.99)
    disc_temperature: float = option(0.1, min=1e-4, max=100.0, help="cosine-logit temperature of that term")
    contrastive_weight: float = option(0.0, min=0.0, max=100.0,
                                       help="in-batch InfoNCE of h(old_i) against the batch's new rows")
    contrastive_temperature: float = option(0.05, min=1e-4, max=100.0, help="cosine temperature of that term")
    structure_weight: float = option(0.0, min=0.0, max=1e4,
                                     help="in-batch similarity structure: mean (cos(new_i, h_j) - cos(new_i, new_j))^2")
    mu_unc: float = option(0.5, min=0.0, max=100.0, help="FastFill's weight on the log-variance s")
    mlp_margin: float = option(2.0, min=0.0, max=100.0,
                               help="auto keeps the mlp over the best closed form only when its validation top-1 "
                                    "gain exceeds this many standard errors of the paired difference (0: any gain)")
    cv_folds: int = option(5, min=0, max=50,
                           help="auto (and linear with ridge null) on small sets: choose the ridge strength, closed "
                                "form vs mlp and the mlp's epoch count by this many-fold cross-validation (every "
                                "pair held out once), then refit the choice on all pairs; 0 or 1 = off")
    cv_below_rows: int = option(2000, min=0,
                                help="auto/linear use cv_folds when the validation split would hold fewer rows than this "
                                     "(a few hundred held-out rows leave a real mlp gain within noise); larger "
                                     "sets keep the single split")
    # closed form
    ridge: float | None = option(None, min=0.0, max=1e6,
                                 help="linear: ridge strength relative to the mean eigenvalue; null = chosen "
                                      f"from ridge_grid on validation ({FALLBACK_RIDGE} without a validation split)")
    ridge_grid: list[float] = option(default_factory=lambda: list(DEFAULT_RIDGE_GRID),
                                     help="relative ridge strengths tried when ridge is null")
    # data
    validation_fraction: float = option(0.1, min=0.0, max=0.9,
                                        help="held-out pairs that select; 0 = no selection (kind auto refuses)")
    max_validation_rows: int = option(5000, min=2, help="cap on rows used for the validation retrieval metric")
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
    if config.uncertainty and config.kind not in ("mlp", "auto"):
        problems.append(f"'uncertainty: true' needs kind: mlp or auto (got kind: {config.kind}); "
                        "the closed-form kinds have no uncertainty head")
    if config.kind == "auto" and config.validation_fraction <= 0:
        problems.append("kind: auto selects on held-out pairs but validation_fraction is 0; set "
                        "validation_fraction > 0 (e.g. 0.1) or pick a kind (linear, procrustes, mlp)")
    if not config.input_noise_grid or any(not isinstance(v, float) or v < 0 for v in config.input_noise_grid):
        problems.append(f"'input_noise_grid' must be a non-empty list of noise scales >= 0, "
                        f"got {config.input_noise_grid!r}")
    if not config.ridge_grid or any(not isinstance(v, float) or v < 0 for v in config.ridge_grid):
        problems.append(f"'ridge_grid' must be a non-empty list of strengths >= 0, got {config.ridge_grid!r}")
    if problems:
        raise ConfigError(problems, source)
