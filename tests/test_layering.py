"""The torch-free core stays torch-free: each module imports in a process where torch cannot.

Allocation (the ILP, budgets, row rules), plans and the hardware cost models are meant to
run where torch is not installed (a build server, a hardware engineer's machine). Each
module is imported in a fresh interpreter whose import system refuses ``torch``; the
package ``mixq`` itself is entered without running its ``__init__`` (which exports the
torch API), so that every module is judged on its own imports.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mixq

SRC = Path(mixq.__file__).resolve().parent

TORCH_FREE = [
    "mixq.errors",
    "mixq.io",
    "mixq.schemes",
    "mixq.ratio",
    "mixq.assignment",
    "mixq.grids",
    "mixq.plan",
    "mixq.allocation",
    "mixq.allocation.budget",
    "mixq.allocation.costs",
    "mixq.allocation.options",
    "mixq.allocation.ilp",
    "mixq.allocation.rows",
    "mixq.hw",
    "mixq.hw.cost",
    "mixq.hw.device",
    "mixq.hw.fpga",
    "mixq.hw.from_model",
    "mixq.hw.latency",
    "mixq.hw.plot",
    "mixq.hw.ratio_search",
    "mixq.hw.report",
    "mixq.hw.rtl_sim",
    "mixq.hw.synthesis",
    "mixq.hw.units",
    "mixq.hw.workload",
]

# Modules whose docstrings promise no torch but whose imports (owned elsewhere) still pull it
# in; each passes once its owner fixes it (non-strict, so the fix shows as XPASS).
NOT_YET = {
    "mixq.recipe": "recipe.py imports mixq.nn.act_quant for ACT_BITS_RANGE and "
    "CalibrationMethod (owner: helper E)",
}

_BLOCK_TORCH = """
import importlib.abc, sys, types

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test (importing {name})")
        return None

sys.meta_path.insert(0, _NoTorch())
"""

_SKIP_PACKAGE_INIT = """
package = types.ModuleType("mixq")
package.__path__ = [{src!r}]
sys.modules["mixq"] = package
"""


def _import_without_torch(module: str, *, package_init: bool) -> subprocess.CompletedProcess[str]:
    code = _BLOCK_TORCH
    if not package_init:
        code += _SKIP_PACKAGE_INIT.format(src=str(SRC))
    code += f"import {module}\nassert 'torch' not in sys.modules\n"
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_the_blocker_really_blocks_torch() -> None:
    result = _import_without_torch("mixq.nn.act_quant", package_init=False)
    assert result.returncode != 0
    assert "torch is blocked" in result.stderr


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_without_torch(module: str) -> None:
    result = _import_without_torch(module, package_init=False)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(
    "module",
    [pytest.param(m, marks=pytest.mark.xfail(reason=r, strict=False)) for m, r in NOT_YET.items()],
)
def test_module_owned_elsewhere_imports_without_torch(module: str) -> None:
    result = _import_without_torch(module, package_init=False)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.xfail(
    reason="mixq/__init__ imports quantize, the layers and the integer engine eagerly, so "
    "`import mixq.hw` runs torch first (owner of the public API: make it lazy)",
    strict=False,
)
def test_hw_imports_through_the_package_without_torch() -> None:
    result = _import_without_torch("mixq.hw", package_init=True)
    assert result.returncode == 0, result.stderr[-2000:]
