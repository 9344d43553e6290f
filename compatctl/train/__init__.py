"""Training new models: config, method registry, trainer (imports torch)."""

from compatctl.train.config import TrainConfig, load_train_config
from compatctl.train.trainer import train_model

__all__ = ["TrainConfig", "load_train_config", "train_model"]
