"""What each backfill order means, with hand-written expectations (not derived from backfill_order)."""

import numpy as np
import pytest

from compatctl.backfill import backfill_order, budget_rows
from compatctl.errors import BadInputError

IDS = np.array([40, 10, 30, 20])


def ids_in_order(name, ids=IDS, **facts):
    return ids[backfill_order(name, ids=ids, **facts)].tolist()


def test_uncertainty_highest_first_ties_by_id():
    assert ids_in_order("uncertainty", uncertainty=np.array([0.5, 2.0, 0.5, -1.0])) == [10, 30, 40, 20]


def test_norm_shortest_first_ties_by_id():
    embeddings = np.array([[3.0, 4.0], [0.0, 1.0], [5.0, 0.0], [0.6, 0.8]])  # norms 5, 1, 5, 1
    assert ids_in_order("norm", embeddings=embeddings) == [10, 20, 30, 40]


@pytest.mark.parametrize("name, facts", [
    ("random", {}), ("uncertainty", {"uncertainty": np.array([3.0, 1.0, 2.0, 0.0])}),
    ("norm", {"embeddings": np.array([[1.0], [4.0], [2.0], [3.0]])})])
def test_orders_depend_on_ids_not_row_order(name, facts):
    shuffle = np.array([2, 0, 3, 1])
    shuffled = {key: value[shuffle] for key, value in facts.items()}
    assert ids_in_order(name, IDS[shuffle], **shuffled) == ids_in_order(name, **facts)


def test_random_is_seeded_and_a_permutation():
    first = ids_in_order("random", seed=3)
    assert first == ids_in_order("random", seed=3) and sorted(first) == sorted(IDS.tolist())
    assert any(ids_in_order("random", seed=s) != first for s in range(4, 10))


def test_budget_rows_rounds_up_and_checks_range():
    assert [budget_rows(f, 10) for f in (0, 0.01, 0.3, 1)] == [0, 1, 3, 10]
    with pytest.raises(BadInputError, match="between 0 and 1"):
        budget_rows(1.5, 10)
