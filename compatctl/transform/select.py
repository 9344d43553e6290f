"""Model selection for `fit-transform`: score candidates on held-out pairs with `eval`'s metric.

The score of a transform h on validation pairs is retrieval of new-model queries against the
transformed rows h(old), computed by ``compatctl.evaluate.evaluate`` (same distance, tie rule
and leave-one-out as ``compatctl eval``):

- with labels: ``top1`` (CMC top-1, a query's own item left out), tie-broken by ``map``;
- without labels: ``pair_top1``, the share of new rows whose nearest transformed row is their
  own pair h(old_i), tie-broken by ``pair_mrr`` (mean reciprocal rank of that pair). The own
  pair is the only relevant row, so this needs no labels and still measures ranking.

Candidates are compared by (metric, tie-break); on an exact tie the earlier (simpler) one wins.
A validation split of a few hundred rows makes top-1 noisy, and the mlp is picked as the best
of many epochs, so ``kind: auto`` replaces the best closed form by the mlp only when the mlp's
gain is larger than ``mlp_margin`` standard errors of the paired difference (McNemar: queries
only the mlp gets right minus queries only the closed form gets right, against the square root
of their sum; see ``paired_gain``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from compatctl.store import EmbeddingBlock
from compatctl.transform.pairs import Pairs


@dataclasses.dataclass
class Scorer:
    """Validation rows (a seeded sample of at most ``max_rows``) and how to score a mapping of them."""

    pairs: Pairs
    distance: str
    split: str = "validation"

    @classmethod
    def build(cls, validation: Pairs, distance: str, max_rows: int, seed: int, split: str = "validation"):
        if len(validation) > max_rows:
            pick = np.sort(np.random.default_rng(seed + 1).choice(len(validation), max_rows, replace=False))
            validation = validation.take(pick)
        return cls(validation, distance, split)

    @property
    def labelled(self) -> bool:
        return self.pairs.labels is not None

    @property
    def names(self) -> tuple[str, str]:
        """(selection metric, tie-break) names."""
        return ("top1", "map") if self.labelled else ("pair_top1", "pair_mrr")

    def score(self, mapped: np.ndarray) -> dict[str, float]:
        """{metric: value, tie-break: value} of new queries against ``mapped`` (rows of ``pairs.old``)."""
        from compatctl.evaluate import evaluate

        new = np.ascontiguousarray(self.pairs.new, dtype=np.float32)
        mapped = np.ascontiguousarray(mapped, dtype=np.float32)
        rows = np.arange(len(new), dtype=np.int64)
        if self.labelled:
            query = EmbeddingBlock(new, rows, self.pairs.labels)
            gallery = EmbeddingBlock(mapped, rows, self.pairs.labels)
        else:  # each row its own class; gallery ids shifted so the own pair is not left out
            query = EmbeddingBlock(new, rows, rows)
            gallery = EmbeddingBlock(mapped, rows + len(rows), rows)
        metrics = evaluate(query, gallery, distance=self.distance, topk=(1,))["metrics"]
        first, second = self.names
        return {first: float(metrics["top1"]), second: float(metrics["map"])}

    def key(self, scores: dict[str, float]) -> tuple[float, float]:
        first, second = self.names
        return scores[first], scores[second]


    def hits(self, mapped: np.ndarray, block_rows: int = 2048) -> np.ndarray:
        """Per-query top-1 hit (bool [rows]) under the rules of ``score``; numpy, in blocks."""
        new, mapped = self.pairs.new.astype(np.float32), np.asarray(mapped, np.float32)
        if self.distance == "cosine":
            new = new / np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
            mapped = mapped / np.maximum(np.linalg.norm(mapped, axis=1, keepdims=True), 1e-12)
            bias = np.zeros(len(mapped), np.float32)
        else:
            bias = -0.5 * (mapped * mapped).sum(1)
        hits = np.empty(len(new), bool)
        for start in range(0, len(new), block_rows):
            rows = np.arange(start, min(start + block_rows, len(new)))
            scores = new[rows] @ mapped.T + bias
            if self.labelled:  # leave-one-out; argmax takes the smallest row (= id) on ties, as eval
                scores[np.arange(len(rows)), rows] = -np.inf
                hits[rows] = self.pairs.labels[scores.argmax(1)] == self.pairs.labels[rows]
            else:
                hits[rows] = scores.argmax(1) == rows
        return hits


def paired_gain(challenger_hits: np.ndarray, incumbent_hits: np.ndarray) -> tuple[int, int, float]:
    """(queries only the challenger gets right, only the incumbent, their difference in standard errors)."""
    only_challenger = int((challenger_hits & ~incumbent_hits).sum())
    only_incumbent = int((incumbent_hits & ~challenger_hits).sum())
    spread = np.sqrt(only_challenger + only_incumbent)
    return only_challenger, only_incumbent, float((only_challenger - only_incumbent) / spread) if spread else 0.0


def best_index(scorer: Scorer, rows: list[dict]) -> int:
    """Index of the best-scoring candidate row (the first one on an exact tie)."""
    keys = [scorer.key(row) for row in rows]
    return max(range(len(rows)), key=lambda i: (keys[i], -i))


def candidates_record(scorer: Scorer, rows: list[dict], chosen: int) -> dict:
    """What the artifact header stores about the selection (``header["candidates"]``)."""
    first, second = scorer.names
    table = [{**row, "chosen": i == chosen} for i, row in enumerate(rows)]
    return {"metric": first, "tie_break": second, "distance": scorer.distance, "split": scorer.split,
            "rows": int(len(scorer.pairs)), "table": table}
