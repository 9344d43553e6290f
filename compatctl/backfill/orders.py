"""Moved to :mod:`compatctl.orders` (a numpy-only leaf shared with `evaluate`); kept so old imports work."""

from compatctl.orders import ORDER_NEEDS, ORDERS, backfill_order, budget_rows, row_norms  # noqa: F401
