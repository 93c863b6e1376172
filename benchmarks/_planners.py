"""The allocation methods of the comparison benchmarks, at 4- or 3-bit equivalent weights:
each method's recipe, its size target, and the planners (Hessian RMSMP, HAWQ-V3 ILP, DFQ,
joint ILP) that turn a float model into a :class:`mixq.plan.Plan`.

``allocation_compare`` introduced these planners at one size; here they take the size
level as a parameter so that ``method_compare`` runs them at 4 and 3 bits.

>>> method_ratio("msp", 3)
'sp2-3:0.5,fixed-3:0.5'
>>> hawq_candidates(3)
('fixed-3', 'fixed-4', 'fixed-8')
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from _seeds import BenchmarkSettingsError
from torch import Tensor, nn

import mixq
from mixq.allocation.budget import Budget
from mixq.allocation.fpga_budget import FpgaThroughput
from mixq.allocation.ilp import solve_ilp
from mixq.allocation.options import PerturbationTable
from mixq.dfq import DfqConfig, dfq_search
from mixq.hw import hardware_point
from mixq.plan import LayerPlan, LayerShape, Plan
from mixq.ratio import Ratio
from mixq.recipe import LayerConfig, Recipe, Rule
from mixq.sensitivity import (
    HAWQ_CANDIDATES,
    JOINT_CANDIDATES,
    HutchinsonConfig,
    SensitivityTable,
    gauss_newton_traces,
    hessian_rmsmp_plan,
    hutchinson_traces,
    perturbation_table,
)
from mixq.shapes import measure_layer_shapes

EDGE = "fixed-8"  # first and last layer, with 8-bit inputs, in every method
EQ_BITS = (4, 3)
# Methods whose recipe is one ratio for every middle layer; the rest plan per layer/row.
RATIO_METHODS = ("fixed", "sp2", "msp", "rmsmp")
# dfq-fixed-size: DFQ at Fixed-b's weight size (the DFQ claim: better than fixed bits at
# equal compression); joint-ilp-fpga: the joint ILP at Fixed-b's modelled images/s on
# FPGA_DEVICE (equal throughput, size free); every other planned method meets RMSMP's size.
PLANNED_METHODS = (
    "rmsmp-hessian",
    "hawq-v3-ilp",
    "dfq",
    "dfq-fixed-size",
    "joint-ilp",
    "joint-ilp-fpga",
)
HESSIAN_METHODS = ("rmsmp-hessian", "hawq-v3-ilp", "joint-ilp", "joint-ilp-fpga")
FPGA_DEVICE = "xc7z045"
CIFAR_EXAMPLE = (1, 3, 32, 32)  # one CIFAR image: the layer shapes of the FPGA budget
# A plan's images/s given back as a target is shaded by this much, so that the last bit of
# hardware_point's sum of per-layer latencies cannot make an equal plan miss it.
TARGET_SHADE = 1e-12
METHODS = RATIO_METHODS + PLANNED_METHODS


def row_name(method: str, eq_bits: int) -> str:
    """The result's method name (BENCHMARKS.md): ``fixed4``, ``sp2-3``, ``msp``, ...

    >>> row_name("fixed", 3), row_name("sp2", 4), row_name("joint-ilp", 3)
    ('fixed3', 'sp2-4', 'joint-ilp')
    """
    if method == "fixed":
        return f"fixed{eq_bits}"
    if method == "sp2":
        return f"sp2-{eq_bits}"
    return method


def expected_rows(methods: Sequence[str], levels: Sequence[int]) -> set[tuple[str, int]]:
    """The (row name, level) pairs a run of ``methods`` at ``levels`` reports.

    >>> sorted(expected_rows(["fixed", "msp"], [4]))
    [('fixed4', 4), ('msp', 4)]
    """
    return {(row_name(m, b), b) for m in methods for b in levels}


def method_ratio(method: str, eq_bits: int) -> str:
    """The ratio of every middle layer of a ratio method (RMSMP's shares at both levels;
    the Hessian RMSMP and the size targets use the ``rmsmp`` one)."""
    if eq_bits not in EQ_BITS:
        raise BenchmarkSettingsError(f"eq_bits must be one of {EQ_BITS}, got {eq_bits}")
    b = eq_bits
    ratios = {
        "fixed": f"fixed-{b}",
        "sp2": f"sp2-{b}",
        "msp": f"sp2-{b}:0.5,fixed-{b}:0.5",
        "rmsmp": f"sp2-{b}:0.6,fixed-{b}:0.35,fixed-8:0.05",
    }
    base = "rmsmp" if method in PLANNED_METHODS else method
    if base not in ratios:
        raise BenchmarkSettingsError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return ratios[base]


def method_recipe(method: str, eq_bits: int, act_bits: int) -> Recipe:
    """The method's recipe: its middle-layer ratio at ``act_bits``, first and last layer
    Fixed-8 with 8-bit inputs. Planned methods take RMSMP's recipe (their plan overrides
    the ratios; the recipe still fixes rounding, calibration and scheme rule)."""
    edge_bits = max(act_bits, 8)
    rules = tuple(Rule(m, ratio=Ratio.parse(EDGE), act_bits=edge_bits) for m in ("@first", "@last"))
    default = LayerConfig(Ratio.parse(method_ratio(method, eq_bits)), act_bits=act_bits)
    return Recipe(default, rules)


def hawq_candidates(eq_bits: int) -> tuple[str, ...]:
    return HAWQ_CANDIDATES if eq_bits == 4 else ("fixed-3", "fixed-4", "fixed-8")


def joint_candidates(eq_bits: int) -> tuple[str, ...]:
    if eq_bits == 4:
        return JOINT_CANDIDATES
    return (
        "fixed-8",
        "fixed-4",
        "fixed-3",
        "sp2-3",
        "sp2-3:0.5,fixed-3:0.5",
        "sp2-3:0.6,fixed-3:0.35,fixed-8:0.05",
        "sp2-3:0.45,fixed-3:0.45,fixed-8:0.1",
    )


def weight_bits(model: nn.Module, recipe: Recipe) -> int:
    """Bits of every quantised weight under ``recipe``'s ratios (rows rounded as convert does)."""
    total = 0
    configs = recipe.resolve(mixq.quantizable_layer_names(model))
    for name, config in configs.items():
        if config is None:
            continue
        weight = _weight(model, name)
        counts = config.ratio.row_counts(weight.shape[0])
        total += sum(c.bits * n for c, n in counts.items()) * weight[0].numel()
    return int(total)


def _weight(model: nn.Module, name: str) -> Tensor:
    weight = model.get_submodule(name).weight
    assert isinstance(weight, Tensor)
    return weight


def sensitivity_table(
    base: nn.Module,
    data: Iterable[Any],
    config: HutchinsonConfig,
    path: Path,
    key: dict[str, Any],
    weights: str,
    *,
    exact_batches: int | None = None,
) -> SensitivityTable:
    """The Hutchinson table of ``base`` on ``data`` (or, given ``exact_batches``, the exact
    Gauss-Newton traces over that many of its batches), reused from ``path`` when it was
    measured with ``key`` (the settings it depends on)."""
    key_path = path.with_suffix(".key.json")
    if path.is_file() and key_path.is_file() and json.loads(key_path.read_text()) == key:
        return SensitivityTable.load(path)
    if exact_batches is not None:
        table = gauss_newton_traces(
            base,
            data,
            max_batches=exact_batches,
            seed=config.seed,
            model_name="resnet20",
            weights_path=weights,
            progress=False,
        )
    else:
        table = hutchinson_traces(
            base, data, config, model_name="resnet20", weights_path=weights, progress=False
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    table.save(path)
    key_path.write_text(json.dumps(key) + "\n")
    return table


def make_plan(
    method: str,
    base: nn.Module,
    eq_bits: int,
    act_bits: int,
    *,
    table: SensitivityTable | None,
    train_data: Iterable[Any],
    dfq_steps: int,
    seed: int,
) -> Plan | None:
    """The plan of a planned method at the weight size of RMSMP at ``eq_bits`` (Fixed-b's
    for ``dfq-fixed-size``; first and last layer Fixed-8 in every plan); ``None`` for a
    ratio method."""
    if method in RATIO_METHODS:
        return None
    if method in HESSIAN_METHODS and table is None:
        raise BenchmarkSettingsError(f"{method} needs a Hessian table")
    names = mixq.quantizable_layer_names(base)
    edges = (names[0], names[-1])
    recipe = method_recipe("rmsmp", eq_bits, act_bits)
    target = weight_bits(base, recipe)
    if method == "dfq-fixed-size":
        target = weight_bits(base, method_recipe("fixed", eq_bits, act_bits))
    layer_act_bits = {n: max(act_bits, 8) if n in edges else act_bits for n in names}
    overrides = dict.fromkeys(edges, (EDGE,))
    if method == "rmsmp-hessian":
        assert table is not None
        return hessian_rmsmp_plan(base, table, recipe)
    if method == "joint-ilp-fpga":
        assert table is not None
        shapes = measure_layer_shapes(base, torch.zeros(CIFAR_EXAMPLE))
        return fpga_joint_plan(
            perturbation_table(
                base, table, joint_candidates(eq_bits), overrides=overrides, granularity="row"
            ),
            fixed_images_per_s(shapes, eq_bits, act_bits) * (1 - TARGET_SHADE),
            layer_act_bits,
        )
    if method in ("hawq-v3-ilp", "joint-ilp"):
        assert table is not None
        joint = method == "joint-ilp"
        options = perturbation_table(
            base,
            table,
            joint_candidates(eq_bits) if joint else hawq_candidates(eq_bits),
            overrides=overrides,
            granularity="row" if joint else "layer",
        )
        return solve_ilp(
            options, Budget(weight_bits=target), act_bits=layer_act_bits, method=method
        )
    return _dfq_plan(base, names, edges, target, act_bits, train_data, dfq_steps, seed)


def _dfq_plan(
    base: nn.Module,
    names: Sequence[str],
    edges: tuple[str, str],
    target: int,
    act_bits: int,
    train_data: Iterable[Any],
    steps: int,
    seed: int,
) -> Plan:
    middle = [n for n in names if n not in edges]
    middle_weights = sum(_weight(base, n).numel() for n in middle)
    edge_bits = sum(8 * _weight(base, n).numel() for n in edges)
    config = DfqConfig(
        target_eq_bits=(target - edge_bits) / middle_weights,
        granularity="row",
        scheme="fixed",
        steps=steps,
        act_bits=act_bits,
        seed=seed,
    )
    # The searched plan covers the middle layers; the edges keep the recipe's Fixed-8.
    return dfq_search(base, train_data, config, layers=middle, progress=False).plan


def ratio_plan(shapes: Mapping[str, LayerShape], method: str, eq_bits: int, act_bits: int) -> Plan:
    """A ratio method's plan as its recipe quantises the model: the method's ratio at
    ``act_bits`` in the middle layers, the first and last Fixed-8 with 8-bit inputs."""
    names = list(shapes)
    edges = {names[0], names[-1]}
    middle = Ratio.parse(method_ratio(method, eq_bits))
    return Plan(
        {
            n: LayerPlan(Ratio.parse(EDGE), max(act_bits, 8))
            if n in edges
            else LayerPlan(middle, act_bits)
            for n in names
        },
        method=method,
    )


def fixed_images_per_s(
    shapes: Mapping[str, LayerShape], eq_bits: int, act_bits: int, device: str = FPGA_DEVICE
) -> float:
    """Fixed-b's modelled images/s on ``device`` (:func:`mixq.hw.hardware_point`, the
    figure method_compare reports beside its accuracy)."""
    plan = ratio_plan(shapes, "fixed", eq_bits, act_bits)
    return hardware_point(plan, shapes, devices=[device]).images_per_s[device]


def fpga_joint_plan(
    options: PerturbationTable,
    images_per_s: float,
    layer_act_bits: Mapping[str, int],
    device: str = FPGA_DEVICE,
    *,
    weight_bits: int | None = None,
) -> Plan:
    """The joint ILP's plan of least perturbation at ``images_per_s`` or more modelled on
    ``device`` (on the accelerator built for the candidates; see docs/hardware.md), and at
    most ``weight_bits`` if given."""
    budget = Budget(weight_bits=weight_bits, fpga=FpgaThroughput(device, images_per_s))
    return solve_ilp(options, budget, act_bits=dict(layer_act_bits), method="joint-ilp-fpga")
