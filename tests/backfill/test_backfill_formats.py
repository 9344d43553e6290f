"""backfill reads GALLERY and --new-embeddings in any format, through the one source interface."""

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from compatctl.backfill import backfill  # noqa: E402
from compatctl.store import open_embeddings  # noqa: E402
from compatctl.store.export import export  # noqa: E402
from tests.backfill.conftest import read_set  # noqa: E402


@pytest.mark.parametrize("target,name", [("parquet", "g.parquet"), ("npy", "g-npy"), ("faiss", "g.faiss")])
def test_backfill_from_every_format_equals_backfill_from_the_set(world, tmp_path, target, name):
    reference = tmp_path / "from-set"
    backfill(world.gallery, world.linear, reference, budget=0.4, order="norm", new_embeddings=world.new_set)
    gallery, new = tmp_path / name, tmp_path / "new.parquet"
    export(open_embeddings(world.gallery), gallery, target=target, shard_rows=100)
    export(open_embeddings(world.new_set), new, target="parquet", block_rows=40)
    out = tmp_path / "from-format"
    backfill(gallery, world.linear, out, budget=0.4, order="norm", new_embeddings=new)
    expected, got = read_set(reference), read_set(out)
    np.testing.assert_array_equal(got.ids, expected.ids)
    np.testing.assert_array_equal(got.provenance, expected.provenance)
    np.testing.assert_allclose(got.embeddings, expected.embeddings, atol=1e-6)
    assert (got.provenance == 2).sum() == 120
