"""The layers of mixq hold: the torch-free core imports without torch, every import points
down the layer map, and docs/architecture.md shows the same map.

Allocation (the ILP, budgets, row rules), plans and the hardware cost models are meant to
run where torch is not installed (a build server, a hardware engineer's machine). Each
module is imported in a fresh interpreter whose import system refuses ``torch``; the
package ``mixq`` itself is entered without running its ``__init__`` (which exports the
torch API), so that every module is judged on its own imports. Every module's imports are
then read with ``ast`` and checked against ``LAYERS`` (lowest first) and ``PEERS``.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

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
    "mixq.allocation.fpga_budget",
    "mixq.hw",
    "mixq.hw.cost",
    "mixq.hw.device",
    "mixq.hw.dual_mode_mac",
    "mixq.hw.fpga",
    "mixq.hw.assumptions",
    "mixq.hw.baseline",
    "mixq.hw.from_model",
    "mixq.hw.latency",
    "mixq.hw.option_cycles",
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


# --- Import directions: each module imports only its own layer or lower ones ---------------
#
# The layers, lowest first (docs/architecture.md draws the same map). A module's layer is
# the entry naming it exactly, else the longest ``pkg.*`` pattern that covers it; "" is
# the package ``mixq`` itself, whose exports are all lazy.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "core (no torch)",
        (
            *("errors", "io", "textfile", "jsonfile", "plotting", "schemes", "ratio"),
            *("assignment", "grids", "plan", "recipe", "allocation", "allocation.*"),
            *("hw", "hw.*"),
        ),
    ),
    (
        "torch building blocks",
        (
            *("grid_tensors", "fakequant", "scale_init", "clip_screen", "scoring", "nn", "nn.*"),
            *("fold", "batches", "layer_hooks", "calibrate", "mappings", "toggle", "summary"),
            *("weight_reuse", "machine"),
            *("shapes", "distributed_env", "models", "models.*", "data", "data.*"),
        ),
    ),
    ("module swap and rounding", ("swap", "ptq", "ptq.*")),
    ("quantize pipeline and checkpoints", ("convert", "checkpoint")),
    (
        "methods on a quantised model",
        (
            *("sensitivity", "sensitivity.*", "dfq", "dfq.*", "train", "train.*"),
            *("integer", "integer.*", "hw.cpu_latency"),
        ),
    ),
    ("export", ("export", "export.*")),
    ("public API", ("",)),
    ("CLI helpers", ("cli", "cli._*")),
    ("CLI commands", ("cli.*",)),
    ("CLI entry", ("cli.main", "__main__")),
]

# Within a layer, these groups stand side by side: none imports another.
PEERS: list[tuple[str, ...]] = [
    ("mixq.swap", "mixq.ptq"),  # the swap builds layers; rounding them is quantize's next step
    ("mixq.sensitivity", "mixq.dfq", "mixq.train", "mixq.integer", "mixq.hw.cpu_latency"),
    ("mixq.data.cifar10", "mixq.data.fashion_mnist", "mixq.data.stsb"),  # share data.subsets
]
CLI_COMMANDS_PEERS = True  # no subcommand imports another; shared pieces live in cli._*

# Upward imports made inside a function, so that the lower module imports without the
# higher one (the torch-free core without torch). Each needs its reason; one that is no
# longer made must leave this list.
LAZY_UPWARD: dict[tuple[str, str], str] = {
    ("mixq.grids", "mixq.grid_tensors"): "signed_grid's tensors, asked for by torch code only",
    ("mixq.allocation.rows", "mixq.scoring"): "the row pipeline's torch side (row shapes)",
    ("mixq.allocation.rows", "mixq.nn.weight_quant"): "the row pipeline's torch side (errors)",
    ("mixq.hw.pareto", "mixq.summary"): "describe() a torch model handed in (torch is there)",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(SRC.rglob("*.py"))}


def _layer_of(module: str) -> int:
    """Index into LAYERS of ``module`` (a dotted name under mixq); -1 if no entry covers it."""
    local = module.removeprefix("mixq").removeprefix(".")
    exact = [i for i, (_, names) in enumerate(LAYERS) if local in names]
    if exact:
        return exact[0]
    best, best_len = -1, -1
    for i, (_, names) in enumerate(LAYERS):
        for pattern in names:
            wildcard = pattern.endswith("*") and fnmatch.fnmatchcase(local, pattern)
            if wildcard and len(pattern) > best_len:
                best, best_len = i, len(pattern)
    return best


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    lazy: bool  # inside a function: runs when called, not when the importer is imported


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    assert node.level == 0, "mixq uses absolute imports only"
    base = node.module or ""
    # ``from mixq.cli import _common`` imports the module mixq.cli._common.
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
    return found or [base]


def import_edges(module: str) -> list[Edge]:
    """The mixq modules ``module`` imports at run time (``if TYPE_CHECKING`` blocks left out)."""
    edges: list[Edge] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, lazy)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                for target in _targets(child):
                    if target == "mixq" or target.startswith("mixq."):
                        edges.append(Edge(module, target, child.lineno, lazy))
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, lazy or inner)

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")), False)
    return edges


ALL_EDGES = [edge for module in MODULES for edge in import_edges(module)]


def _group(module: str, groups: tuple[str, ...]) -> str | None:
    return next((g for g in groups if module == g or module.startswith(g + ".")), None)


def forbidden_edges(edges: list[Edge]) -> list[str]:
    """Every edge that breaks a rule above, as ``importer:line -> imported (why)``."""
    found = []
    for edge in edges:
        low, high = _layer_of(edge.importer), _layer_of(edge.imported)
        if low < 0 or high < 0:
            continue  # test_every_module_has_a_layer names it
        where = f"{edge.importer}:{edge.line} -> {edge.imported}"
        allowed = edge.lazy and (edge.importer, edge.imported) in LAZY_UPWARD
        if high > low and not allowed:
            found.append(f"{where} ({LAYERS[low][0]} imports {LAYERS[high][0]})")
        for groups in PEERS:
            mine, theirs = _group(edge.importer, groups), _group(edge.imported, groups)
            if mine and theirs and mine != theirs:
                found.append(f"{where} (peers {mine} and {theirs})")
        commands = LAYERS.index(next(entry for entry in LAYERS if entry[0] == "CLI commands"))
        if CLI_COMMANDS_PEERS and low == high == commands and edge.importer != edge.imported:
            found.append(f"{where} (one CLI command imports another; share it in cli._*)")
    return found


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if _layer_of(m) < 0]
    assert unplaced == [], f"add these modules to LAYERS (and docs/architecture.md): {unplaced}"


def test_no_module_imports_a_higher_layer_or_a_peer() -> None:
    assert forbidden_edges(ALL_EDGES) == []


def test_every_lazy_upward_import_is_still_made() -> None:
    lazy = {(e.importer, e.imported) for e in ALL_EDGES if e.lazy}
    assert sorted(set(LAZY_UPWARD) - lazy) == []


@pytest.mark.parametrize(
    ("importer", "imported", "lazy", "why"),
    [
        ("mixq.convert", "mixq.ptq.rounding", False, None),  # the pipeline above rounding
        ("mixq.swap", "mixq.ptq.rounding", False, "peers mixq.swap and mixq.ptq"),
        ("mixq.recipe", "mixq.allocation.rows", False, None),  # both core
        ("mixq.shapes", "mixq.calibrate", False, None),  # same layer
        ("mixq.fold", "mixq.swap", False, "torch building blocks imports module swap"),
        ("mixq.plan", "mixq.scoring", False, "core (no torch) imports torch building blocks"),
        ("mixq.plan", "mixq.scoring", True, "core (no torch) imports torch building blocks"),
        ("mixq.grids", "mixq.grid_tensors", True, None),  # an allowed lazy import
        ("mixq.grids", "mixq.grid_tensors", False, "core (no torch)"),  # but not at the top
        ("mixq.cli.demo", "mixq.cli.report", False, "one CLI command imports another"),
        ("mixq.cli.demo", "mixq.cli._plots", False, None),
        ("mixq.cli._plots", "mixq.cli.report", False, "CLI helpers imports CLI commands"),
        ("mixq.data.fashion_mnist", "mixq.data.cifar10", False, "peers"),
        ("mixq.data.fashion_mnist", "mixq.data.subsets", False, None),
        ("mixq.integer.compile", "mixq.export.packed", False, "imports export"),
        ("mixq.dfq.search", "mixq.sensitivity.table", False, "peers mixq.dfq"),
        ("mixq.checkpoint", "mixq.convert", False, None),
        ("mixq.hw.fpga", "mixq", False, "core (no torch) imports public API"),
    ],
)
def test_the_rules_catch_the_edges_they_forbid(
    importer: str, imported: str, lazy: bool, why: str | None
) -> None:
    found = forbidden_edges([Edge(importer, imported, 1, lazy)])
    if why is None:
        assert found == []
    else:
        assert len(found) == 1 and why in found[0], found


def test_the_reader_finds_lazy_and_type_checking_imports() -> None:
    edges = {(e.imported, e.lazy) for e in import_edges("mixq.recipe")}
    assert ("mixq.allocation.rows", False) not in edges  # only under TYPE_CHECKING
    assert ("mixq.errors", False) in edges
    rows = {(e.imported, e.lazy) for e in import_edges("mixq.allocation.rows")}
    assert ("mixq.scoring", True) in rows and ("mixq.scoring", False) not in rows


# --- docs/architecture.md: the same map, every module on it once, under its layer -------

ARCHITECTURE = SRC.parent.parent / "docs" / "architecture.md"
_HEADING = re.compile(r"^## (\d+)\. (.+)$")
_ROW = re.compile(r"^\| `([^`]+\.py)` \|")


def architecture_map(text: str) -> list[tuple[str, int]]:
    """``(file, layer index)`` for each table row of the page, in order."""
    rows, layer = [], -1
    for line in text.splitlines():
        if heading := _HEADING.match(line):
            layer = int(heading.group(1))
            assert LAYERS[layer][0] == heading.group(2), f"heading {line!r} is not {LAYERS[layer]}"
        elif row := _ROW.match(line):
            rows.append((row.group(1), layer))
    return rows


def _file_of(module: str) -> str:
    return MODULES[module].relative_to(SRC).as_posix()


def test_the_architecture_page_lists_every_module_once_under_its_layer() -> None:
    listed = architecture_map(ARCHITECTURE.read_text(encoding="utf-8"))
    files = [file for file, _ in listed]
    assert sorted(f for f in set(files) if files.count(f) > 1) == [], "listed twice"
    expected = {_file_of(m): _layer_of(m) for m in MODULES}
    assert sorted(set(expected) - set(files)) == [], "modules missing from the page"
    assert sorted(set(files) - set(expected)) == [], "files on the page that do not exist"
    misplaced = [(f, LAYERS[n][0]) for f, n in listed if expected[f] != n]
    assert misplaced == [], "listed under another layer than LAYERS gives"


def test_the_page_reader_sees_headings_and_rows() -> None:
    text = "## 2. module swap and rounding\n\n| `swap.py` | the swap |\n| --- | --- |\n"
    assert architecture_map(text) == [("swap.py", 2)]
    with pytest.raises(AssertionError, match="is not"):
        architecture_map("## 2. export\n")
