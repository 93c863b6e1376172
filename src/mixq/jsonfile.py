"""Reading a JSON file that a mixq value was saved to (plans, tables, reports): the one
place that checks the file is there and parses, so that every ``load`` fails the same way,
with the caller's typed error naming what the file should have held. Needs no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixq.errors import MixqError


def read_json(path: str | Path, what: str, error: type[MixqError]) -> Any:
    """The parsed content of ``path``; ``error`` naming ``what`` if the file is missing or
    is not JSON.

    >>> from mixq.errors import RecipeError
    >>> read_json("no/such/plan.json", "plan file", RecipeError)
    Traceback (most recent call last):
    ...
    mixq.errors.RecipeError: plan file not found: no/such/plan.json
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} is not valid JSON: {exc}") from None
