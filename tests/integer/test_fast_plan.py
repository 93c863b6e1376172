"""The fast engine's whole-model plan: one C++ call per forward, the same integers as the
lowered graph run node by node (and so as the reference engine), on every model kind the
engine takes, every instruction set, one and two threads, any batch size."""

from __future__ import annotations

import copy
import operator
import pickle
from collections.abc import Iterator

import pytest
import torch
import torch.fx as fx
from _integer_models import batches, quantize, randomise_bn, residual_net, small_cnn, tiny_resnet
from _test_models import MobileLike
from torch import nn

import mixq
from mixq.errors import FastEngineUnavailableError
from mixq.recipe import Recipe

try:
    from mixq.integer.fast import FastIntegerModel, kernels, lower, set_isa, supported_isas
    from mixq.integer.fast.plan import build_plan

    kernels()
    ISAS = supported_isas()
except FastEngineUnavailableError as exc:  # no compiler: the engines fall back
    pytest.skip(f"fast kernels unavailable: {exc}", allow_module_level=True)


def _mobile() -> nn.Module:
    torch.manual_seed(0)
    return randomise_bn(MobileLike())


MODELS = {
    "small_cnn": (small_cnn, "rmsmp", 4),
    "residual_net": (residual_net, "msp", 8),
    "tiny_resnet": (tiny_resnet, "rmsmp", 4),
    "mobile": (_mobile, "rmsmp", 8),  # cat, max pool, lookups, depthwise, residuals
}


@pytest.fixture(scope="module", params=list(MODELS))
def lowered(request: pytest.FixtureRequest) -> tuple[mixq.integer.IntegerModel, list]:
    build, preset, act_bits = MODELS[request.param]
    data = batches((5, 3, 16, 16))
    recipe = Recipe.preset(preset, act_bits=act_bits, first_last=None)
    return mixq.to_integer(quantize(build(), recipe, data), data[0]), data


@pytest.fixture
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# Every instruction set on one thread; the fastest on two as well (tiles shared by threads).
ISA_THREADS = [(isa, 1) for isa in ISAS] + [(ISAS[-1], 2)]


def _node_by_node(fast: FastIntegerModel, x: torch.Tensor) -> torch.Tensor:
    fast.use_plan = False
    try:
        return fast.forward_integer(x)
    finally:
        fast.use_plan = True


@pytest.mark.parametrize(("isa", "threads"), ISA_THREADS, indirect=["threads"])
def test_plan_gives_the_graphs_integers(lowered: tuple, isa: str, threads: int) -> None:
    reference, data = lowered
    fast = lower(reference)
    plan = fast._compiled_plan()
    assert plan is not None, "every node of these models has a plan step"
    set_isa(isa)
    try:
        for x in [*data, data[0][:1], torch.cat(data)]:
            got = fast.forward_integer(x)
            assert got.dtype == torch.int64
            assert torch.equal(got, _node_by_node(fast, x))
        assert torch.equal(fast.forward_integer(data[1]), reference.forward_integer(data[1]))
    finally:
        set_isa(None)


def test_plan_covers_every_node_in_one_step_each() -> None:
    data = batches((2, 3, 16, 16))
    fast = lower(mixq.to_integer(quantize(tiny_resnet(), "rmsmp", data), data[0]))
    plan = fast._compiled_plan()
    assert plan is not None
    nodes = [n for n in fast.graph_module.graph.nodes if n.op in ("call_module", "call_function")]
    # A two-output layer's getitems are slot aliases, not steps.
    aliases = [n for n in nodes if n.target is operator.getitem and n.args[1] in (0, 1)]
    assert plan.steps == len(nodes) - len(aliases)
    assert plan.native.steps() == plan.steps


def test_a_graph_with_a_node_the_plan_lacks_runs_node_by_node() -> None:
    data = batches((3, 3, 16, 16))
    reference = mixq.to_integer(quantize(small_cnn(), "rmsmp", data), data[0])
    fast = lower(reference)
    graph = fast.graph_module.graph
    output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(output):
        # negate twice: the same integers, through a function with no plan step
        once = graph.call_function(torch.neg, (output.args[0],))
        twice = graph.call_function(torch.neg, (once,))
    output.args = (twice,)
    fast.graph_module.recompile()
    assert build_plan(fast.graph_module) is None
    assert fast._compiled_plan() is None
    assert torch.equal(fast.forward_integer(data[1]), reference.forward_integer(data[1]))


def test_a_layer_the_kernel_cannot_take_leaves_the_plan_to_the_graph() -> None:
    graph_module = fx.symbolic_trace(nn.Sequential(nn.Identity()))
    assert build_plan(graph_module) is None  # an nn.Identity module has no step


def test_copies_and_pickles_rebuild_their_own_plan() -> None:
    data = batches((3, 3, 16, 16))
    fast = lower(mixq.to_integer(quantize(tiny_resnet(), "msp", data), data[0]))
    expected = fast.forward_integer(data[2])  # builds the plan
    assert "_plan" in fast.__dict__
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert "_plan" not in clone.__dict__
        assert torch.equal(clone.forward_integer(data[2]), expected)
        assert clone._compiled_plan() is not None


def test_native_plan_refuses_slots_out_of_range() -> None:
    native = kernels().Plan(2)
    with pytest.raises(RuntimeError, match="bad input slot"):
        native.add(2, [5], [1], [1, 0, 0, 255, 0], [], 0.0, [])
    with pytest.raises(RuntimeError, match="unknown step kind"):
        native.add(42, [0], [1], [], [], 0.0, [])
    with pytest.raises(RuntimeError, match="never written"):
        native.run(torch.zeros(1), 1)
