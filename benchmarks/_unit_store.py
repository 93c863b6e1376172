"""Finished benchmark units (no torch): one folder per unit under a work dir, keyed by its
settings, and a ledger of the same records meant to be committed.

The work dir holds what a unit needs while it runs (trainer checkpoints, its plan); it is
not committed, so a fresh checkout loses it. The ledger keeps, per finished unit, one small
JSON file with the unit's settings, its row and the few files a report reads again (a
plan), so reports and later chunks on another checkout find every finished unit.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> store = UnitStore(folder / "runs", ledger=folder / "ledger", kept_files=("plan.json",))
>>> unit = store.unit_dir("msp-w4-s0", {"seed": 0})
>>> unit.mkdir(parents=True)
>>> _ = (unit / "plan.json").write_text('{"layers": {}}')
>>> _ = store.save("msp-w4-s0", {"seed": 0}, {"top1": 0.81})
>>> fresh = UnitStore(folder / "elsewhere", ledger=folder / "ledger")
>>> fresh.load("msp-w4-s0", {"seed": 0}), fresh.kept_file("msp-w4-s0", {"seed": 0}, "plan.json")
({'top1': 0.81}, '{"layers": {}}')
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mixq.io import atomic_write_text

UNIT_FILE = "unit.json"


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short digest of ``settings`` (JSON with sorted keys): equal settings, equal key.

    >>> settings_key({"a": 1, "b": 2}) == settings_key({"b": 2, "a": 1})
    True
    >>> settings_key({"a": 1}) == settings_key({"a": 2})
    False
    """
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(settings: Mapping[str, Any]) -> Any:
    """``settings`` as they read back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


class UnitStore:
    """Finished units under ``root``: one folder per unit, named by the unit's label and the
    key of its settings, so a changed setting gets a fresh folder (and a fresh trainer
    checkpoint) while an unchanged one finds its finished row or its checkpoint again.

    With a ``ledger`` folder, every finished unit also has ``<label>-<key>.json`` there
    (settings, row, and the files of ``kept_files`` that its folder holds), written when
    the unit is saved or first loaded from the work dir, and read when the work dir lacks
    the unit. A ledger record is never overwritten: equal key, equal unit."""

    def __init__(
        self, root: Path, ledger: Path | None = None, kept_files: Sequence[str] = ()
    ) -> None:
        self.root = Path(root)
        self.ledger = None if ledger is None else Path(ledger)
        self.kept_files = tuple(kept_files)

    def unit_dir(self, label: str, settings: Mapping[str, Any]) -> Path:
        return self.root / f"{label}-{settings_key(settings)}"

    def ledger_path(self, label: str, settings: Mapping[str, Any]) -> Path | None:
        if self.ledger is None:
            return None
        return self.ledger / f"{label}-{settings_key(settings)}.json"

    def load(self, label: str, settings: Mapping[str, Any]) -> dict[str, Any] | None:
        """The finished row of this unit, or ``None`` when it has not finished with exactly
        these settings (in the work dir or the ledger)."""
        record = _read_record(self.unit_dir(label, settings) / UNIT_FILE, settings)
        if record is not None:
            self._mirror(label, settings, record["row"])
            return record["row"]
        ledger = self.ledger_path(label, settings)
        record = None if ledger is None else _read_record(ledger, settings)
        return None if record is None else record["row"]

    def kept_file(self, label: str, settings: Mapping[str, Any], name: str) -> str | None:
        """The text of a unit's kept file (``plan.json``): from its folder, else from its
        ledger record; ``None`` when neither has it."""
        path = self.unit_dir(label, settings) / name
        if path.is_file():
            return path.read_text()
        ledger = self.ledger_path(label, settings)
        record = None if ledger is None else _read_record(ledger, settings)
        files = {} if record is None else record.get("files", {})
        text = files.get(name) if isinstance(files, dict) else None
        return text if isinstance(text, str) else None

    def save(self, label: str, settings: Mapping[str, Any], row: Mapping[str, Any]) -> Path:
        path = self.unit_dir(label, settings) / UNIT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"settings": _plain(settings), "row": dict(row)}, indent=2) + "\n"
        atomic_write_text(path, text)
        self._mirror(label, settings, row)
        return path

    def _mirror(self, label: str, settings: Mapping[str, Any], row: Mapping[str, Any]) -> None:
        ledger = self.ledger_path(label, settings)
        if ledger is None or ledger.is_file():
            return
        folder = self.unit_dir(label, settings)
        files = {n: (folder / n).read_text() for n in self.kept_files if (folder / n).is_file()}
        record = {"settings": _plain(settings), "row": dict(row), "files": files}
        ledger.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(ledger, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _read_record(path: Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record at ``path`` when it is whole and was made with exactly ``settings``."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged file is a unit to redo, not a result
    if not isinstance(saved, dict) or saved.get("settings") != _plain(settings):
        return None
    return saved if isinstance(saved.get("row"), dict) else None
