"""Forward transforms old (+ side-info) -> new embedding space: fit, store, apply, check.

``load_transform`` and ``Transform.apply`` use numpy only; torch is imported only to train
an ``mlp`` transform.
"""

from compatctl.transform.artifact import Transform, load_transform
from compatctl.transform.compat import check_compatible
from compatctl.transform.config import KINDS, TransformConfig, load_transform_config
from compatctl.transform.fit import FITTERS, fit_transform, leave_one_out_top1, validation_metrics

__all__ = ["FITTERS", "KINDS", "Transform", "TransformConfig", "check_compatible", "fit_transform",
           "leave_one_out_top1", "load_transform", "load_transform_config", "validation_metrics"]
