"""Query-side transforms: map new-model *queries* into the old space; the old gallery stays as is.

A query transform is an ordinary transform artifact fitted the other way round,
``compatctl fit-transform NEW_EMB OLD_EMB --out T`` (its "old" side is the new model, its "new"
side the old one), so every kind — linear, procrustes, mlp and ``auto`` — serves both
directions. It is applied with the numpy forward pass of ``compatctl.transform.artifact``,
block by block as the queries stream (torch is never imported). What is checked, in this
direction: the queries' dims and model fingerprint against the transform's input side, and
the gallery's against its output side.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from compatctl.errors import BadInputError
from compatctl.store import EmbeddingBlock
from compatctl.evaluate.sources import source_name


class TransformedQueries:
    """A query source seen through a transform: each block is mapped as it is read (streamed).

    Ids, labels and row count are the wrapped source's; ``dim`` and ``model_fingerprint`` are
    the transform's output side (the gallery's model).
    """

    def __init__(self, source, transform):
        self._inner, self.transform = source, transform
        self.path = Path(f"{source_name(source)} via {transform.path}")
        self.rows, self.dim = int(source.rows), int(transform.new_dim)
        self.has_labels, self.has_uncertainty = source.has_labels, False
        self.model_fingerprint = transform.new_fingerprint
        self.header = {"model_fingerprint": transform.new_fingerprint}
        self.id_type = getattr(source, "id_type", None)
        self.label_type = getattr(source, "label_type", None)

    def iter_blocks(self, block_rows: int = 65536, part=(1, 1), verify: bool = True) -> Iterator[EmbeddingBlock]:
        for block in self._inner.iter_blocks(block_rows, part=part, verify=verify):
            yield self._map(block)

    def _map(self, block: EmbeddingBlock) -> EmbeddingBlock:
        return EmbeddingBlock(self.transform.apply(block.embeddings)[0], block.ids, block.labels)

    def read_all(self) -> EmbeddingBlock:
        return EmbeddingBlock.concat(list(self.iter_blocks(1 << 30)))

    def read_range(self, start: int, stop: int, verify: bool = True) -> EmbeddingBlock:
        return self._map(self._inner.read_range(start, stop, verify))

    def segment_blocks(self, index: int, block_rows: int = 65536, verify: bool = True) -> Iterator[EmbeddingBlock]:
        for block in self._inner.segment_blocks(index, block_rows, verify):
            yield self._map(block)

    def column(self, name: str, segment: int | None = None, verify: bool = True):
        """ids and labels are the wrapped source's (read without the embeddings); nothing else is carried."""
        return self._inner.column(name, segment, verify) if name in ("ids", "labels") else None

    def __getattr__(self, name):
        # the layout of the wrapped source (segments, files), never its embeddings
        if name in ("shards", "read_column", "num_segments", "segment_bounds", "part_segments", "files",
                    "checksums"):
            return getattr(self._inner, name)
        raise AttributeError(name)


def check_query_transform(transform, query, gallery) -> list[str]:
    """Can ``transform`` map ``query`` into ``gallery``'s space? Returns warnings; raises BadInputError.

    Dims always; model fingerprints where both sides record one (an .npz records none: a warning).
    """
    where, t = source_name(query), transform.path
    refit = "fit the query transform with `compatctl fit-transform NEW_EMB OLD_EMB --out T` (new model first)"
    if transform.side_info_dim:
        raise BadInputError(f"{t} was fit with side-info; a query transform takes the query embeddings only: {refit} "
                            "without --side-info")
    found = query.model_fingerprint
    if found is not None and found == transform.new_fingerprint and found != transform.old_fingerprint:
        raise BadInputError(f"--query-transform {t}: maps model {transform.old_fingerprint} into the space of model "
                            f"{found}, which {where} already comes from; pass the other model's queries, or, if it "
                            f"was fit old -> new, {refit}")
    if query.dim != transform.old_dim:
        raise BadInputError(f"--query-transform {t}: maps {transform.old_dim}-d inputs but {where} holds "
                            f"{query.dim}-d embeddings; {refit}")
    if found is not None and transform.old_fingerprint is not None and found != transform.old_fingerprint:
        raise BadInputError(f"--query-transform {t}: was fit on model {transform.old_fingerprint} but {where} comes "
                            f"from model {found}; pass that model's queries, or {refit}")
    if gallery.model_fingerprint is not None and transform.new_fingerprint is not None \
            and gallery.model_fingerprint != transform.new_fingerprint:
        raise BadInputError(f"--query-transform {t}: maps into model {transform.new_fingerprint} but the gallery "
                            f"{source_name(gallery)} comes from model {gallery.model_fingerprint}; pass that "
                            "model's gallery, or fit the transform towards the gallery's model")
    warnings = []
    for side, recorded, expected in (("queries", found, transform.old_fingerprint),
                                     ("gallery", gallery.model_fingerprint, transform.new_fingerprint)):
        if recorded is None or expected is None:
            warnings.append(f"--query-transform {t}: cannot verify that the {side} come from the model it was fit "
                            "on (no model fingerprint recorded)")
    return warnings


def with_query_transform(query, transform_path, gallery) -> tuple[TransformedQueries, list[str]]:
    """(``query`` mapped by the transform at ``transform_path``, warnings), after the checks above."""
    from compatctl.transform.artifact import load_transform

    transform = load_transform(transform_path)
    warnings = check_query_transform(transform, query, gallery)
    return TransformedQueries(query, transform), warnings


def describe_query_transform(transform) -> dict:
    """The report's record of the transform applied to the queries."""
    return {"path": str(transform.path), "kind": transform.kind, "fingerprint": transform.fingerprint,
            "input_dim": transform.old_dim, "output_dim": transform.new_dim,
            "input_model": transform.old_fingerprint, "output_model": transform.new_fingerprint}
