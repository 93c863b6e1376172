"""Reading a text file a user names (a recipe, a plan, a table): the one place that checks
the file is there, readable and UTF-8 text, so that a binary file given by mistake or an
unreadable one fails with the caller's typed error naming what the file should have held.
Needs no torch.
"""

from __future__ import annotations

from pathlib import Path

from mixq.errors import MixqError


def read_text(path: str | Path, what: str, error: type[MixqError]) -> str:
    """The UTF-8 text of ``path``; ``error`` naming ``what`` if the file is missing,
    unreadable or not UTF-8.

    >>> from mixq.errors import RecipeError
    >>> read_text("no/such/recipe.yaml", "recipe file", RecipeError)
    Traceback (most recent call last):
    ...
    mixq.errors.RecipeError: recipe file not found: no/such/recipe.yaml
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {path} is not UTF-8 text (byte {exc.start}): is it a binary file?"
        ) from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
