"""Allocation: turning per-row statistics and budgets into assignments (no torch needed)."""

from mixq.allocation.rows import RowStats, SchemeRule, assign_rows

__all__ = ["RowStats", "SchemeRule", "assign_rows"]
