"""Where backfilled rows come from: merged by id from stored new embeddings, or embedded now.

Both sources answer the same two calls: ``prepare(target_rows, target_ids)`` for the gallery
rows this run must fill (sorted row indices and their ids; errors name missing ids), then
``rows(start, stop)``: the new-model embeddings of the targets inside gallery rows
``[start, stop)``, in row order. A registry picks the source from the options given.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from compatctl.backfill.rows import RowSpill, content_fingerprint, missing_ids_message
from compatctl.errors import BadInputError
from compatctl.store import IdIndex, expect_kind, open_embeddings
from compatctl.store.columns import UTF8, column_type, same_column_types
from compatctl.transform.compat import check_fingerprint


class MergedNewRows:
    """``--new-embeddings EMB``: rows matched by id, streamed once into a disk spill."""

    def __init__(self, path: Path, transform, *, force: bool, scratch: Path, block_rows: int,
                 columns: dict | None = None):
        self.path, self.scratch, self.block_rows = Path(path), scratch, block_rows
        self.source = open_embeddings(path, columns, shared_columns=True)
        if self.source.dim != transform.new_dim:
            raise BadInputError(f"--new-embeddings {path}: {self.source.dim}-d rows, but the transform maps to "
                                f"{transform.new_dim}-d; pass embeddings of the transform's new model")
        self.warnings = check_fingerprint(self.source.model_fingerprint, transform.new_fingerprint,
                                          source=f"--new-embeddings {path}", what="new model", force=force)
        self.model_fingerprint = self.source.model_fingerprint or transform.new_fingerprint
        self.identity = f"embeddings:{content_fingerprint(self.source)}"
        self.spill: RowSpill | None = None
        self.scan_rows = self.source.rows  # rows prepare() streams

    def prepare(self, target_rows: np.ndarray, target_ids: np.ndarray,
                progress: Callable[[int], None] | None = None) -> None:
        if self.source.id_type != column_type(target_ids):
            same_column_types("ids", {"GALLERY": target_ids, f"--new-embeddings {self.path}":
                                      np.zeros(0, "U1" if self.source.id_type == UTF8 else np.int64)})
        self.spill = RowSpill(self.scratch, "new-rows.f32", target_rows, target_ids, self.source.dim)
        if len(target_rows):
            self.spill.fill(self.source.iter_blocks(self.block_rows), progress)
        missing = self.spill.missing_ids(target_ids)
        if len(missing):
            raise BadInputError(missing_ids_message("gallery", f"--new-embeddings {self.path}", missing,
                                                    "embed every id of the plan (--plan-only) and merge again"))

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.spill.rows(start, stop)


class EmbeddedNewRows:
    """``--new-model MODEL --data DATA``: embeds only the target rows, one output shard at a time.

    Each shard's rows are embedded in one call (batches start at the shard's first target), so
    a resumed run embeds exactly the same batches as an uninterrupted one.
    """

    def __init__(self, model_path: Path, data_spec: str, transform, *, force: bool, batch_size: int = 256):
        from compatctl.models.embed import check_model_path

        self.model_path, self.data_spec, self.batch_size = Path(model_path), data_spec, batch_size
        check_model_path(self.model_path)
        header = self.model_header = expect_kind(self.model_path, "model")
        self.model_fingerprint = header.get("fingerprint")
        self.warnings = check_fingerprint(self.model_fingerprint, transform.new_fingerprint,
                                          source=f"--new-model {model_path}", what="new model", force=force)
        width = header.get("embedding_width")
        if width is not None and int(width) != transform.new_dim:
            raise BadInputError(f"--new-model {model_path}: makes {width}-d embeddings, but the transform maps to "
                                f"{transform.new_dim}-d; pass the new model the transform was fit on")
        self.identity = f"model:{self.model_fingerprint}:data:{data_spec}"
        self.data = self.model = None
        self.scan_rows = 0

    def prepare(self, target_rows: np.ndarray, target_ids: np.ndarray, progress=None) -> None:
        self.target_rows = np.asarray(target_rows, np.int64)
        if not len(target_rows):
            return
        from compatctl.data import load_data
        from compatctl.models.embed import check_image_shape

        if column_type(target_ids) == UTF8:
            raise BadInputError(f"--data {self.data_spec}: its items have integer ids but GALLERY's ids are "
                                "strings; embed the new rows yourself and merge them with --new-embeddings")
        self.data = load_data(self.data_spec, split="all")
        check_image_shape(self.model_header, self.data.image_shape, self.model_path, self.data_spec)
        rows, found = IdIndex(self.data.ids).locate(target_ids)
        if not found.all():
            raise BadInputError(missing_ids_message(
                "gallery", f"--data {self.data_spec}", np.sort(np.asarray(target_ids)[~found]),
                "pass the dataset the gallery was embedded from"))
        self.data_index = rows

    def rows(self, start: int, stop: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.target_rows, [start, stop])
        if hi == lo:
            return np.empty((0, 0), np.float32)
        if self.model is None:
            from compatctl.models import load_model

            self.model, self.header = load_model(self.model_path, device="cpu")
        from compatctl.models import embed_images

        images = self.data.images[self.data_index[lo:hi]]
        return np.asarray(embed_images(self.model, self.header, images, batch_size=self.batch_size,
                                       device="cpu"), np.float32)


def new_row_source(*, new_model: Path | None, data: str | None, new_embeddings: Path | None, transform,
                   force: bool, scratch: Path, block_rows: int, columns: dict | None = None):
    """The source of backfilled rows for the options given (exactly one must be chosen)."""
    if (new_model is None) == (new_embeddings is None):
        raise BadInputError("a --budget above 0 needs exactly one of --new-model MODEL (with --data DATA) "
                            "or --new-embeddings EMB")
    if new_embeddings is not None:
        if data is not None:
            raise BadInputError("--data goes with --new-model, not with --new-embeddings; drop --data")
        return MergedNewRows(new_embeddings, transform, force=force, scratch=scratch, block_rows=block_rows,
                             columns=columns)
    if data is None:
        raise BadInputError("--new-model needs --data DATA: the dataset the gallery was embedded from")
    return EmbeddedNewRows(new_model, data, transform, force=force)
