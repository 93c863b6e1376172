"""Rows a report keeps from earlier result files (no torch).

A driver's report is made from the finished units it finds. A row (say ``fixed3`` at W3)
whose units are not in this checkout's store, nor in its ledger, would drop out of the
result file when another row is reported; it is kept from the file being replaced instead,
or from an earlier file named with ``--carry-from`` (a chunk that ran on another checkout),
when that file was made with the same settings, and marked as carried. A row is keyed by
its method and level: the first file that has it gives it, and a row with units now is
never carried.

>>> old = {"created": "2026-12-01T00:00:00Z", "settings": {"qat": {"epochs": 3}},
...        "rows": [{"method": "fp32"}, {"method": "msp", "eq_bits_target": 3},
...                 {"method": "msp", "eq_bits_target": 4}]}
>>> rows, note = carried_rows([old], {("msp", 4)}, {"qat": {"epochs": 3}})
>>> [r["method"] for r in rows], rows[0]["carried_from"], note["levels"], note["rows"]
(['msp'], '2026-12-01T00:00:00Z', [3], ['msp@w3'])
>>> carried_rows([old], set(), {"qat": {"epochs": 4}})[1]["levels"]
[]
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

RowKey = tuple[str, int]


def previous_result(path: Path) -> dict[str, Any] | None:
    """The result file at ``path`` (the one a report is about to replace, or an earlier
    one to carry rows from), or ``None`` (absent or unreadable)."""
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result if isinstance(result, dict) else None


def earlier_results(replaced: Path, carry_from: Sequence[Path]) -> list[dict[str, Any] | None]:
    """The file a report replaces, then the ``--carry-from`` files, in the order
    :func:`carried_rows` takes rows from them."""
    return [previous_result(path) for path in (replaced, *carry_from)]


def carried_rows(
    previous: Sequence[Mapping[str, Any] | None],
    reported: Collection[RowKey],
    agreed: Mapping[str, Any],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of the ``previous`` files, in their order, whose (method, level) is not in
    ``reported`` and not given by an earlier file, taken only from files whose settings
    equal ``agreed`` on each of its keys; each with ``carried_from`` (its file's creation
    time). Also a note for the settings block: the rows, their levels and files, and the
    files left out with the settings that differ."""
    taken: set[RowKey] = set(reported)
    rows: list[dict[str, Any]] = []
    sources: list[str] = []
    refused: list[str] = []
    for result in previous:
        if result is None:
            continue
        settings = result.get("settings", {})
        created = str(result.get("created"))
        differing = sorted(k for k, v in agreed.items() if settings.get(k) != v)
        if differing:
            refused.append(f"{created}: settings differ: {differing}")
            continue
        fresh = [r for r in result.get("rows", []) if _key(r) is not None and _key(r) not in taken]
        taken.update(k for k in map(_key, fresh) if k is not None)
        # A row carried again keeps the creation time of the file that measured it.
        rows += [{**row, "carried_from": row.get("carried_from", created)} for row in fresh]
        if fresh:
            sources.append(created)
    note: dict[str, Any] = {
        "rows": [f"{r['method']}@w{r['eq_bits_target']}" for r in rows],
        "levels": sorted({r["eq_bits_target"] for r in rows}),
        "from": sources,
        "why": "no finished unit of these rows in this checkout's store or ledger; kept "
        "from earlier result files made with the same settings; their FPGA figures are as "
        "those files had them",
    }
    if refused:
        note["not_carried"] = refused
    return rows, note


def _key(row: Mapping[str, Any]) -> RowKey | None:
    if "eq_bits_target" not in row or "method" not in row:
        return None
    return str(row["method"]), int(row["eq_bits_target"])
