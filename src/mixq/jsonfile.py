"""Reading a JSON file that a mixq value was saved to (plans, tables, reports): the one
place that reads (:func:`mixq.textfile.read_text`) and parses, so that every ``load``
fails the same way, with the caller's typed error naming what the file should have held.
Needs no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixq.errors import MixqError
from mixq.textfile import read_text


def read_json(path: str | Path, what: str, error: type[MixqError]) -> Any:
    """The parsed content of ``path``; ``error`` naming ``what`` if the file is missing,
    unreadable, not UTF-8 or not JSON.

    >>> from mixq.errors import RecipeError
    >>> read_json("no/such/plan.json", "plan file", RecipeError)
    Traceback (most recent call last):
    ...
    mixq.errors.RecipeError: plan file not found: no/such/plan.json
    """
    text = read_text(path, what, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path} is not valid JSON: {exc}") from None
