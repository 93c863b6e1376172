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


def parse_metadata_header(
    path: str | Path,
    metadata: dict[str, str],
    key: str,
    format_name: str,
    what: str,
    error: type[MixqError],
) -> dict[str, Any]:
    """The JSON header that a safetensors file of ``format_name`` keeps under ``key`` of its
    metadata (checkpoints, packed models); ``error`` if it is missing, not JSON, not an
    object or of another format. The version check is the caller's (each format has its
    own history).

    >>> from mixq.errors import CheckpointError
    >>> meta = {"h": '{"format": "mixq.x", "version": 2}'}
    >>> parse_metadata_header("m.st", meta, "h", "mixq.x", "mixq model", CheckpointError)
    {'format': 'mixq.x', 'version': 2}
    >>> parse_metadata_header("m.st", {"h": "[1]"}, "h", "mixq.x", "mixq model", CheckpointError)
    Traceback (most recent call last):
    ...
    mixq.errors.CheckpointError: m.st: unknown format [1], which is not 'mixq.x'
    """
    if key not in metadata:
        raise error(f"{path} is not a {what} (no '{key}' header)")
    try:
        header = json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise error(f"{path}: header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != format_name:
        found = header.get("format") if isinstance(header, dict) else header
        raise error(f"{path}: unknown format {found!r}, which is not {format_name!r}")
    return header
