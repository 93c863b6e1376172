"""Reusing weight quantisers' outputs: the same values as recomputing, recomputed on change."""

from __future__ import annotations

import contextlib
import copy
import importlib

import pytest
import torch
from torch import nn

import mixq
import mixq.ptq.rounding
from mixq.nn.weight_quant import RowWeightQuantizer
from mixq.ptq.rounding import apply_error_feedback
from mixq.weight_reuse import ReusedWeightQuantization
from tests.ptq._ptq_models import calibrated_small_resnet, small_resnet_batches

calibrate_module = importlib.import_module("mixq.calibrate")


class _NoReuse(contextlib.nullcontext):
    def __init__(self, model: nn.Module) -> None:
        super().__init__(self)

    def forget(self) -> None:
        pass


def _token_model() -> tuple[nn.Module, list[torch.Tensor]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    batches = [torch.randn(6, 5, 16) for _ in range(3)]
    recipe = mixq.Recipe.preset("rmsmp", first_last=None)
    return mixq.quantize(net, recipe, progress=False), batches


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def _count_forwards(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = RowWeightQuantizer.forward

    def counted(self: RowWeightQuantizer, w_rows: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return original(self, w_rows)

    monkeypatch.setattr(RowWeightQuantizer, "forward", counted)
    return calls


def test_calibration_with_reuse_equals_calibration_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, batches = _token_model()
    plain = copy.deepcopy(model)
    calls = _count_forwards(monkeypatch)
    mixq.calibrate(model, batches, progress=False)
    assert calls[0] == 2  # once per layer, not once per layer and batch
    monkeypatch.setattr(calibrate_module, "ReusedWeightQuantization", _NoReuse)
    mixq.calibrate(plain, batches, progress=False)
    assert calls[0] == 2 + 2 * len(batches)
    reused, recomputed = _state(model), _state(plain)
    assert all(torch.equal(reused[k], recomputed[k]) for k in recomputed)


def test_one_pass_rounding_with_reuse_equals_rounding_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches = small_resnet_batches()
    model = calibrated_small_resnet(batches)
    plain = copy.deepcopy(model)
    apply_error_feedback(model, batches, progress=False)
    monkeypatch.setattr(mixq.ptq.rounding, "ReusedWeightQuantization", _NoReuse)
    apply_error_feedback(plain, batches, progress=False)
    reused, recomputed = _state(model), _state(plain)
    assert all(torch.equal(reused[k], recomputed[k]) for k in recomputed)


def test_a_changed_weight_or_clip_is_quantised_again() -> None:
    model, _ = _token_model()
    layer = model[0]
    with ReusedWeightQuantization(model), torch.no_grad():
        first = layer.quantized_weight()
        assert layer.quantized_weight().data_ptr() == first.data_ptr()
        layer.weight.mul_(0.5)  # in place: the version counter moves
        halved = layer.quantized_weight()
        assert halved.data_ptr() != first.data_ptr() and torch.equal(
            halved, layer.weight_quant(layer.weight_rows())
        )
        layer.weight_quant.alpha.mul_(2.0)
        assert not torch.equal(layer.quantized_weight(), halved)
    with ReusedWeightQuantization(model):  # with gradients: computed every time
        one, two = layer.quantized_weight(), layer.quantized_weight()
        assert one.data_ptr() != two.data_ptr()


def test_leaving_the_block_restores_the_quantisers_and_forget_drops_outputs() -> None:
    model, _ = _token_model()
    layer = model[0]
    with ReusedWeightQuantization(model) as reuse, torch.no_grad():
        assert "forward" in layer.weight_quant.__dict__
        first = layer.quantized_weight()
        reuse.forget()
        assert layer.quantized_weight().data_ptr() != first.data_ptr()
    assert "forward" not in layer.weight_quant.__dict__
    with torch.no_grad():
        one, two = layer.quantized_weight(), layer.quantized_weight()
        assert one.data_ptr() != two.data_ptr()
