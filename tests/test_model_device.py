"""Tensors made inside mixq land on the device of the model they belong to: quantised layers
built from a layer on another device, DFQ's bit widths, the Hessian pass's probes and
averages (checked on the ``meta`` device, which needs no GPU). Where one is present, the
quantise, Hessian, integer and training paths run on CUDA and give what they give on the
CPU; without one those tests skip, saying so."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import mixq
from mixq.assignment import RowAssignment
from mixq.dfq.quantizer import FractionalBitsQuantizer
from mixq.errors import IntegerConversionError
from mixq.integer.weights import integer_weights
from mixq.nn.layers import QuantConv2d, QuantLinear
from mixq.schemes import Candidate
from mixq.sensitivity import HutchinsonConfig, hutchinson_traces
from mixq.sensitivity.hutchinson import _averaged_hvps, _rademacher
from mixq.train import TrainConfig, train

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def _devices(module: nn.Module) -> set[str]:
    return {t.device.type for t in [*module.parameters(), *module.buffers()]}


def _assignment(rows: int) -> RowAssignment:
    return RowAssignment.uniform(Candidate.parse("fixed-4"), rows)


def test_a_quantised_layer_built_from_a_layer_lives_where_it_does() -> None:
    conv = nn.Conv2d(3, 8, 3, device="meta")
    linear = nn.Linear(8, 4, device="meta")
    layers = [
        QuantConv2d.from_float(conv, _assignment(8), act_bits=4),
        QuantLinear.from_float(linear, _assignment(4), act_bits=4),
    ]
    for layer in layers:
        assert _devices(layer) == {"meta"}, type(layer).__name__
        assert layer.weight_quant.alpha.dtype == torch.float32  # the clips stay float32


def test_dfq_bit_widths_live_with_the_clip_levels() -> None:
    quantizer = FractionalBitsQuantizer(torch.ones(4, device="meta"), 9, "fixed", init_bits=3.5)
    assert _devices(quantizer) == {"meta"}


def test_probes_are_drawn_on_the_cpu_and_follow_the_weight() -> None:
    weight = torch.empty(4, 6, device="meta", dtype=torch.float16)
    on_meta, on_cpu = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    probe = _rademacher(weight, on_meta)
    assert (probe.device.type, probe.dtype) == ("meta", torch.float16)
    # The CPU generator moved as for a CPU weight: the next probes are the same signs.
    _rademacher(torch.empty(4, 6), on_cpu)
    assert torch.equal(
        _rademacher(torch.empty(4, 6), on_meta), _rademacher(torch.empty(4, 6), on_cpu)
    )


def test_averaged_products_stay_on_the_model_device() -> None:
    weights = {"w": torch.empty(3, 5, device="meta")}
    probes = [{"w": torch.empty(3, 5, device="meta")} for _ in range(2)]
    batch = (torch.empty(4, 5, device="meta"), torch.empty(4, device="meta"))

    def hvps(
        w: dict[str, Tensor], vs: dict[str, Tensor], x: Tensor, y: Tensor, shared: bool
    ) -> dict[str, Tensor]:
        return {key: value * 2 for key, value in vs.items()}

    averaged = _averaged_hvps(hvps, weights, probes, [[batch], [batch]])
    assert averaged["w"].device.type == "meta"
    assert averaged["w"].shape == (2, 3, 5)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.2), nn.Linear(8, 4),
    ).eval()  # fmt: skip


def _data() -> list[Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(8, 3, 10, 10, generator=generator) for _ in range(2)]


def test_the_fast_engine_refuses_a_model_off_the_cpu() -> None:
    data = _data()
    qnet = mixq.quantize(_net(), "rmsmp", calibration_data=data, progress=False).to("meta")
    with pytest.raises(IntegerConversionError, match="fast engine's kernels run on the CPU"):
        mixq.to_integer(qnet, data[0], engine="fast")


# -- on a GPU, where there is one --------------------------------------------------------------


@needs_cuda
def test_quantize_and_to_integer_on_cuda_give_the_cpu_model() -> None:
    data = _data()
    on_cpu = mixq.quantize(_net(), "rmsmp", calibration_data=data, progress=False)
    on_gpu = mixq.quantize(
        _net().cuda(), "rmsmp", calibration_data=[x.cuda() for x in data], progress=False
    )
    assert _devices(on_gpu) == {"cuda"}
    for cpu_layer, gpu_layer in zip(
        mixq.describe(on_cpu).layers, mixq.describe(on_gpu).layers, strict=True
    ):
        assert gpu_layer.counts == cpu_layer.counts, cpu_layer.name
    # Another device's float32 kernels can move a GPTQ rounding by one grid step, which
    # moves a logit by a few hundredths: the outputs agree to that, not to the last bit.
    with torch.no_grad():
        torch.testing.assert_close(
            on_gpu(data[1].cuda()).cpu(), on_cpu(data[1]), atol=0.05, rtol=0.05
        )
    for name, layer in on_gpu.named_modules():
        if isinstance(layer, QuantConv2d | QuantLinear):  # read on the CPU, the same values
            got, want = integer_weights(layer), integer_weights(copy.deepcopy(layer).cpu())
            assert torch.equal(got.values, want.values), name
            assert (got.step == want.step).all(), name
    integer = mixq.to_integer(on_gpu, data[0].cuda())
    assert _devices(integer) <= {"cuda"}
    expected = mixq.to_integer(on_cpu, data[0]).forward(data[1])
    torch.testing.assert_close(integer(data[1].cuda()).cpu(), expected, atol=0.05, rtol=0.05)


@needs_cuda
def test_the_hessian_pass_on_cuda_gives_the_cpu_table() -> None:
    data = [(x, torch.arange(8) % 4) for x in _data()]
    config = HutchinsonConfig(min_probes=4, max_probes=4, seed=1)
    cpu = hutchinson_traces(_net(), data, config, progress=False)
    gpu = hutchinson_traces(_net().cuda(), data, config, progress=False)
    for name, layer in cpu.layers.items():
        assert gpu.layer(name).probes == layer.probes  # the same probes, drawn on the CPU
        assert gpu.layer(name).trace == pytest.approx(layer.trace, rel=1e-4), name


@needs_cuda
def test_a_cuda_run_resumes_with_the_gpu_random_state(tmp_path: Path) -> None:
    data = [(x.cuda(), (torch.arange(8) % 4).cuda()) for x in _data()]
    config = TrainConfig(epochs=2, lr=0.01, warmup_epochs=0)

    def run(out: Path, **options: Any) -> dict[str, Tensor]:
        model = _net().cuda()
        train(model, data, config, output_dir=out, progress=False, **options)
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    evaluations: list[int] = []

    def stop_after_epoch_1(model: nn.Module) -> dict[str, float]:
        evaluations.append(1)
        if len(evaluations) == 2:  # the end of epoch 2, before its checkpoint: a kill
            raise KeyboardInterrupt
        return {}

    uninterrupted = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "stopped", evaluate=stop_after_epoch_1)
    state = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    assert len(state["history"]) == 1 and "cuda_rng" in state
    resumed = run(tmp_path / "stopped", resume=True)  # dropout draws on the GPU
    for key, value in uninterrupted.items():
        assert torch.equal(resumed[key], value), key
