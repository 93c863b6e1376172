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

import mixq

SRC = Path(mixq.__file__).resolve().parent

TORCH_FREE = [
    "mixq.errors",
    "mixq.io",
    "mixq.jsonfile",
    "mixq.plotting",
    "mixq.textfile",
    "mixq.schemes",
    "mixq.ratio",
    "mixq.assignment",
    "mixq.grids",
    "mixq.plan",
    "mixq.recipe",
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
    "mixq.hw.assumptions",
    "mixq.hw.baseline",
    "mixq.hw.from_model",
    "mixq.hw.latency",
    "mixq.hw.packed_mac",
    "mixq.hw.packing",
    "mixq.hw.pareto",
    "mixq.hw.plot",
    "mixq.hw.ratio_search",
    "mixq.hw.report",
    "mixq.hw.rtl_sim",
    "mixq.hw.synthesis",
    "mixq.hw.units",
    "mixq.hw.workload",
]

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


def _import_without_torch(
    modules: list[str], *, package_init: bool
) -> subprocess.CompletedProcess[str]:
    """Import each of ``modules`` in one fresh interpreter; print those that fail."""
    code = _BLOCK_TORCH
    if not package_init:
        code += _SKIP_PACKAGE_INIT.format(src=str(SRC))
    code += f"""
import importlib, traceback
failed = []
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name)
        print(f"--- {{name}}:", traceback.format_exc(limit=-3), file=sys.stderr)
if "torch" in sys.modules:
    failed.append("torch got imported")
print("FAILED:", failed)
sys.exit(1 if failed else 0)
"""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_the_blocker_really_blocks_torch() -> None:
    result = _import_without_torch(["mixq.nn.act_quant"], package_init=False)
    assert result.returncode == 1
    assert "torch is blocked" in result.stderr and "FAILED: ['mixq.nn.act_quant']" in result.stdout


def test_every_torch_free_module_imports_without_torch() -> None:
    result = _import_without_torch(TORCH_FREE, package_init=False)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


def test_the_package_itself_imports_without_torch() -> None:
    # mixq/__init__ exports the torch API lazily, so the torch-free core stays usable
    # through the ordinary import path.
    modules = ["mixq", "mixq.errors", "mixq.recipe", "mixq.hw", "mixq.plan", "mixq.allocation.ilp"]
    result = _import_without_torch(modules, package_init=True)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
