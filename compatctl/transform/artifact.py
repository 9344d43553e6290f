"""A fitted transform on disk and its numpy forward pass (no torch on this path).

Tensors use the ``x @ W`` convention ([in, out] weights). Input standardization, LayerNorm
affines and output scaling are folded into the weights at export, so applying is a few
block GEMMs plus a row-wise normalization per residual block.

Layouts (tensor names) per kind:

- ``linear``/``procrustes``: ``old.weight`` [old_dim, new_dim], optional ``side.weight``
  [side_dim, new_dim], ``bias`` [new_dim]: ``y = old @ Wo + side @ Ws + b``.
- ``mlp``: ``old_in.*``, ``side_in.*`` (branches, ReLU), ``merge.*`` (ReLU), ``block{i}.fc1/fc2.*``
  (pre-LayerNorm residual blocks), ``head.*`` (after a final LayerNorm; the weights after a
  LayerNorm have zero column sums, which makes the centering free), ``skip.weight`` (a linear
  path old -> new), with side-info optionally ``side_skip.weight`` (side-info -> new), and with uncertainty ``unc.*`` (log-variance from the transformed embedding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store import expect_kind, load_arrays

LN_EPS = 1e-5
APPLY_BLOCK_ROWS = 4096  # best of 1024-16384 on 2 cores (benchmarks/transform_apply.py)


class Transform:
    """A loaded transform: header facts plus float32 weights; ``apply`` maps old rows to new."""

    def __init__(self, header: dict, tensors: dict[str, np.ndarray], path: str = "transform"):
        self.header, self.path = header, path
        self.tensors = {name: np.ascontiguousarray(t, dtype=np.float32) for name, t in tensors.items()}
        self.kind = header["transform_kind"]
        self.old_dim, self.new_dim = int(header["old_dim"]), int(header["new_dim"])
        self.side_info_dim = int(header.get("side_info_dim") or 0)
        self.has_uncertainty = bool(header.get("uncertainty"))
        self.old_fingerprint = header.get("old_fingerprint")
        self.new_fingerprint = header.get("new_fingerprint")
        self.side_info_fingerprint = header.get("side_info_fingerprint")
        self.fingerprint = header.get("fingerprint")
        if self.kind not in FORWARDS:
            raise BadInputError(f"{path}: transform kind {self.kind!r} is unknown to this compatctl "
                                f"(knows {', '.join(FORWARDS)}); upgrade compatctl or re-fit")

    def apply(self, old: np.ndarray, side_info: np.ndarray | None = None,
              block_rows: int = APPLY_BLOCK_ROWS, workers: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
        """Transform old embeddings [n, old_dim] (+ side-info [n, side_info_dim]).

        Rows go through in blocks of ``block_rows``; ``workers`` > 1 runs blocks in threads (numpy
        releases the GIL, so the elementwise steps use more than one core).

        Returns (new-space embeddings float32 [n, new_dim], log-variance float32 [n] or None).
        Raises BadInputError on a dim mismatch or missing/unexpected side-info.
        """
        old = self._checked(old, self.old_dim, "old embeddings")
        if self.side_info_dim and side_info is None:
            raise BadInputError(f"{self.path} was fit with side-info ({self.side_info_dim}-d); pass the "
                                "side-info embeddings of the same rows")
        if side_info is not None:
            if not self.side_info_dim:
                raise BadInputError(f"{self.path} was fit without side-info; do not pass side-info")
            side_info = self._checked(side_info, self.side_info_dim, "side-info")
            if len(side_info) != len(old):
                raise BadInputError(f"side-info has {len(side_info)} rows but there are {len(old)} old rows")
        out = np.empty((len(old), self.new_dim), np.float32)
        log_var = np.empty(len(old), np.float32) if self.has_uncertainty else None
        forward = FORWARDS[self.kind]

        def run_block(start: int) -> None:
            rows = slice(start, start + block_rows)
            out[rows], s = forward(self.tensors, old[rows], None if side_info is None else side_info[rows])
            if log_var is not None:
                log_var[rows] = s

        starts = range(0, len(old), block_rows)
        if workers > 1 and len(starts) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(run_block, starts))
        else:
            for start in starts:
                run_block(start)
        return out, log_var

    def _checked(self, array: np.ndarray, dim: int, what: str) -> np.ndarray:
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[1] != dim:
            raise BadInputError(f"{what} have shape {array.shape} but {self.path} expects [rows, {dim}]; "
                                "pass embeddings from the model the transform was fit on")
        return np.ascontiguousarray(array, dtype=np.float32)

    def parameter_count(self) -> int:
        return int(sum(t.size for t in self.tensors.values()))


def load_transform(path: Path | str) -> Transform:
    """Read a transform artifact written by ``fit_transform``.

    Raises BadInputError if ``path`` is not a compatctl transform.
    """
    header = expect_kind(Path(path), "transform")
    return Transform(header, load_arrays(Path(path)), str(path))


def _affine_forward(t: dict, old: np.ndarray, side: np.ndarray | None):
    out = old @ t["old.weight"]
    if side is not None:
        out += side @ t["side.weight"]
    out += t["bias"]
    return out, None


def _relu_(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0, out=x)


def _linear_relu(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    out = x @ weight
    out += bias
    return _relu_(out)


def _normalized_linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """LayerNorm followed by a linear layer, with the LayerNorm affine folded into weight/bias and
    the centering too: ``weight`` has zero column sums, so ``(x − mean) @ W == x @ W``."""
    width = x.shape[1]
    mean = x.mean(axis=1)
    variance = np.einsum("ij,ij->i", x, x) / width - mean * mean
    out = x @ weight
    out *= (1.0 / np.sqrt(np.maximum(variance, 0.0) + LN_EPS))[:, None]
    out += bias
    return out


def _mlp_forward(t: dict, old: np.ndarray, side: np.ndarray | None):
    branch = _linear_relu(old, t["old_in.weight"], t["old_in.bias"])
    merge_weight = t["merge.weight"]
    width = branch.shape[1]
    trunk = branch @ merge_weight[:width]
    if side is not None:
        trunk += _linear_relu(side, t["side_in.weight"], t["side_in.bias"]) @ merge_weight[width:]
    trunk += t["merge.bias"]
    trunk = _relu_(trunk)
    index = 0
    while f"block{index}.fc1.weight" in t:
        hidden = _relu_(_normalized_linear(trunk, t[f"block{index}.fc1.weight"], t[f"block{index}.fc1.bias"]))
        trunk += hidden @ t[f"block{index}.fc2.weight"]
        trunk += t[f"block{index}.fc2.bias"]
        index += 1
    out = _normalized_linear(trunk, t["head.weight"], t["head.bias"])
    out += old @ t["skip.weight"]
    if side is not None and "side_skip.weight" in t:
        out += side @ t["side_skip.weight"]
    log_var = (out @ t["unc.weight"] + t["unc.bias"])[:, 0] if "unc.weight" in t else None
    return out, log_var


FORWARDS = {"linear": _affine_forward, "procrustes": _affine_forward, "mlp": _mlp_forward}
