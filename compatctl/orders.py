"""Backfill orders: which gallery rows to re-embed with the new model first (a leaf module: numpy only,
shared by `evaluate` (curves) and `backfill`).

An order is a function of per-row facts the gallery already holds (ids, the transform's
uncertainty, the transformed embeddings) and returns row indices, first-to-backfill first.
Orders depend on the *set* of ids, never on row order, so `eval --backfill-with` and a real
`backfill` of the same gallery pick the same rows. Ties are broken by ascending id.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compatctl.errors import BadInputError


def _random(ids: np.ndarray, uncertainty, embeddings, seed: int, norms=None) -> np.ndarray:
    by_id = np.argsort(ids, kind="stable")
    return by_id[np.random.default_rng(seed).permutation(len(ids))]


def _uncertainty(ids: np.ndarray, uncertainty, embeddings, seed: int, norms=None) -> np.ndarray:
    if uncertainty is None:
        raise BadInputError("order 'uncertainty' needs per-row uncertainty: fit the transform with "
                            "uncertainty=true and apply it to the gallery, or pick another --order")
    return np.lexsort((ids, -np.asarray(uncertainty, np.float64)))  # highest first, then by id


def _norm(ids: np.ndarray, uncertainty, embeddings, seed: int, norms=None) -> np.ndarray:
    """Smallest transformed-embedding norm first.

    An MSE-trained transform predicts the conditional mean of the new embedding; where the old
    embedding is ambiguous the candidates point different ways and their mean is short. A short
    prediction is therefore a label-free, free-of-charge sign of a poor one.
    """
    if norms is None:
        if embeddings is None:
            raise BadInputError("order 'norm' needs the gallery's transformed embeddings")
        norms = row_norms(embeddings)
    return np.lexsort((ids, norms))


def row_norms(embeddings: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row, in float64 (row by row, so streamed blocks give the same values)."""
    return np.linalg.norm(np.asarray(embeddings, np.float64), axis=1)


# Which per-row facts each order reads: a streamed caller computes only these.
ORDER_NEEDS: dict[str, tuple[str, ...]] = {"random": (), "uncertainty": ("uncertainty",), "norm": ("norms",)}

ORDERS: dict[str, Callable[..., np.ndarray]] = {
    "random": _random,
    "uncertainty": _uncertainty,
    "norm": _norm,
}


def backfill_order(name: str, *, ids: np.ndarray, uncertainty: np.ndarray | None = None,
                   embeddings: np.ndarray | None = None, seed: int = 0,
                   norms: np.ndarray | None = None) -> np.ndarray:
    """Row indices in backfill order (first = backfilled first).

    Args:
        name: a key of ORDERS.
        ids: int64 [N] row ids.
        uncertainty: float [N] per-row uncertainty (needed by 'uncertainty').
        embeddings: [N, D] the gallery's current (transformed) embeddings (needed by 'norm').
        seed: seed of the 'random' order.
        norms: float64 [N] ``row_norms`` of those embeddings, for streamed callers that do not
            hold the gallery (used by 'norm' instead of ``embeddings``).
    Raises:
        BadInputError: unknown order, or a fact the order needs is missing.
    """
    if name not in ORDERS:
        raise BadInputError(f"unknown order {name!r}; valid orders: {', '.join(ORDERS)}")
    return ORDERS[name](np.asarray(ids), uncertainty, embeddings, seed, norms=norms)


def budget_rows(budget: float, rows: int) -> int:
    """How many rows a budget fraction backfills: ceil(budget * rows)."""
    if not 0.0 <= budget <= 1.0:
        raise BadInputError(f"--budget {budget}: must be a fraction between 0 and 1")
    return min(rows, int(np.ceil(round(budget * rows, 9))))
