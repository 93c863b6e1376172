"""Result files in the format of the project's benchmarks (one row per measured model).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "r.json"
>>> ResultFile.new("demo", "mixq demo", {"act_bits": 4}, [{"method": "fp32"}]).save(path)
>>> ResultFile.load(path).rows
[{'method': 'fp32'}]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mixq.errors import MixqError
from mixq.io import atomic_write_text
from mixq.jsonfile import read_json
from mixq.machine import machine_record


class ResultFileError(MixqError, ValueError):
    """A result file that is missing or not in the benchmark result format."""


@dataclass(frozen=True)
class ResultFile:
    benchmark: str
    command: str  # the command that reproduces it
    created: str  # UTC, ISO 8601
    environment: dict[str, Any]
    settings: dict[str, Any]
    rows: list[dict[str, Any]]  # lower_snake_case keys; accuracies as fractions

    @classmethod
    def new(
        cls, benchmark: str, command: str, settings: dict[str, Any], rows: list[dict[str, Any]]
    ) -> ResultFile:
        created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(benchmark, command, created, machine_record(), settings, rows)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ResultFile:
        path = Path(path)
        data = read_json(path, "result file", ResultFileError)
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not names <= set(data):
            raise ResultFileError(f"{path} is not a result file (needs keys {sorted(names)})")
        if not isinstance(data["rows"], list) or not all(isinstance(r, dict) for r in data["rows"]):
            raise ResultFileError(f"{path}: 'rows' must be a list of objects")
        return cls(**{name: data[name] for name in names})
