"""Shared fixtures: where the real data of ``../shared/data`` lies, or a skip when absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mixq.data import default_data_root
from mixq.errors import DataError


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the real data with ``data``, so ``-m "not data"`` works."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (``../shared/data`` from the repository root)."""
    try:
        return default_data_root()
    except DataError as exc:
        pytest.skip(f"real data not available: {exc}")


@pytest.fixture(autouse=True, scope="session")
def _single_thread() -> None:
    """One intra-op thread: the suite shares a small machine with benchmarks."""
    torch.set_num_threads(1)


# --doctest-modules would import every conftest.py as a module named "conftest" and clash
# with the one pytest already loaded; conftests hold fixtures, not doctests.
collect_ignore = ["conftest.py"]
collect_ignore_glob = ["*/conftest.py"]
