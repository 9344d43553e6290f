"""Partial backfill: transform a stored gallery into the new space and re-embed its best rows first.

``backfill`` writes NEW_GALLERY (resumable, by ``--part``, continuing an earlier one);
``backfill_order``/``ORDERS``/``budget_rows`` decide which rows a budget covers, the same way
for a real backfill and for ``compatctl eval --backfill-with``. numpy only at import.
"""

from compatctl.orders import ORDER_NEEDS, ORDERS, backfill_order, budget_rows, row_norms
from compatctl.backfill.plan import read_plan
from compatctl.backfill.run import backfill

__all__ = ["ORDERS", "ORDER_NEEDS", "backfill", "backfill_order", "budget_rows", "read_plan", "row_norms"]
