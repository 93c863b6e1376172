"""Rows a report keeps from the result file it replaces (no torch).

A driver's report is made from the finished units it finds. A level (say W3) whose units
are not in this checkout's store, nor in its ledger, would drop out of the result file when
another level is reported; its rows are kept from the file being replaced instead, when
that file was made with the same settings, and marked as carried.

>>> old = {"created": "2026-12-01T00:00:00Z", "settings": {"qat": {"epochs": 3}},
...        "rows": [{"method": "fp32"}, {"method": "msp", "eq_bits_target": 3}]}
>>> rows, note = carried_rows(old, {4}, {"qat": {"epochs": 3}})
>>> [r["method"] for r in rows], rows[0]["carried_from"], note["levels"]
(['msp'], '2026-12-01T00:00:00Z', [3])
>>> carried_rows(old, {4}, {"qat": {"epochs": 4}})[1]["levels"]
[]
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any


def previous_result(path: Path) -> dict[str, Any] | None:
    """The result file a report is about to replace, or ``None`` (absent or unreadable)."""
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if isinstance(result, dict) else None


def carried_rows(
    previous: Mapping[str, Any] | None,
    levels_with_units: Collection[int],
    agreed: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of ``previous`` at a level with no finished unit now, when ``previous``'s
    settings equal ``agreed`` on each of its keys (else none), each with ``carried_from``
    (the earlier file's creation time); and a note for the settings block."""
    if previous is None:
        return [], {"levels": [], "why": "no earlier result file"}
    settings = previous.get("settings", {})
    differing = sorted(k for k, v in agreed.items() if settings.get(k) != v)
    if differing:
        return [], {"levels": [], "why": f"earlier file's settings differ: {differing}"}
    created = previous.get("created")
    rows = [
        {**row, "carried_from": created}
        for row in previous.get("rows", [])
        if "eq_bits_target" in row and row["eq_bits_target"] not in levels_with_units
    ]
    levels = sorted({row["eq_bits_target"] for row in rows})
    note = {
        "levels": levels,
        "from": created,
        "why": "no finished unit of these levels in this checkout's store or ledger; rows "
        "kept from the file this one replaced, made with the same settings; their FPGA "
        "figures are as that file had them",
    }
    return rows, note
