"""calibrate(): batch forms, batch limits, training mode and its errors."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from torch import nn

import mixq
from mixq.errors import CalibrationError


def _model(act_bits: int = 8) -> nn.Module:
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    recipe = mixq.Recipe(
        mixq.LayerConfig(mixq.Ratio.parse("fixed-8"), act_bits=act_bits),
        scale_method="max",
        row_scorer="magnitude",
    )
    return mixq.quantize(net, recipe, progress=False)


def _acts(model: nn.Module) -> list[mixq.ActQuantizer]:
    return [m for m in model.modules() if isinstance(m, mixq.ActQuantizer)]


def _alphas(model: nn.Module) -> list[float]:
    return [float(a.alpha.detach()) for a in _acts(model)]


def _batches(count: int) -> Iterator[torch.Tensor]:
    for i in range(count):
        yield torch.randn(4, 6, generator=torch.Generator().manual_seed(i))


def test_uses_at_most_the_requested_batches() -> None:
    consumed = []

    def stream() -> Iterator[torch.Tensor]:
        for i, batch in enumerate(_batches(10)):
            consumed.append(i)
            yield batch

    model = _model()
    assert mixq.calibrate(model, stream(), batches=3, progress=False) == 3
    assert consumed == [0, 1, 2]
    assert all(bool(a.calibrated) for a in _acts(model))
    assert mixq.calibrate(model, _batches(2), batches=5, progress=False) == 2


def test_sequence_and_dict_batches() -> None:
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    a = _model()
    b, inner = copy.deepcopy(a), copy.deepcopy(a)
    mixq.calibrate(a, [(x, torch.zeros(4))], progress=False)
    mixq.calibrate(b, [x], progress=False)
    assert _alphas(a) == _alphas(b)

    class Keyword(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *, features: torch.Tensor, scale: float) -> torch.Tensor:
            return self.inner(features * scale)

    c = Keyword(inner)
    assert mixq.calibrate(c, [{"features": x, "scale": 1.0}], progress=False) == 1
    assert _alphas(c) == _alphas(b)


def test_restores_training_mode_and_leaves_no_observers() -> None:
    model = _model().train()
    mixq.calibrate(model, _batches(1), progress=False)
    assert model.training
    assert all(a._samples is None for a in _acts(model))
    model.eval()
    mixq.calibrate(model, _batches(1), progress=False)
    assert not model.training


def test_recalibration_replaces_the_clip() -> None:
    model = _model()
    mixq.calibrate(model, [torch.ones(2, 6)], progress=False)
    first = _alphas(model)[0]
    mixq.calibrate(model, [10 * torch.ones(2, 6)], progress=False)
    assert _alphas(model)[0] == pytest.approx(10 * first)


def test_model_without_activation_quantisers() -> None:
    assert mixq.calibrate(_model(act_bits=0), [], progress=False) == 0


def test_errors() -> None:
    with pytest.raises(CalibrationError, match="yielded no batches"):
        mixq.calibrate(_model(), [], progress=False)
    with pytest.raises(CalibrationError, match="at least one batch"):
        mixq.calibrate(_model(), _batches(1), batches=0, progress=False)
    with pytest.raises(CalibrationError, match="calibration batch 1 is type str: give a tensor"):
        mixq.calibrate(_model(), ["text"], progress=False)
    model = _model()
    with pytest.raises(CalibrationError, match="no batches"):
        mixq.calibrate(model, iter(()), progress=False)
    assert all(a._samples is None for a in _acts(model))  # not left observing


def test_quantiser_off_the_forward_path_is_named() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(6, 3)
            self.unused = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    model = mixq.quantize(
        Branchy(),
        mixq.Recipe(mixq.LayerConfig(mixq.Ratio.parse("fixed-8")), scale_method="max"),
        progress=False,
    )
    with pytest.raises(CalibrationError, match=r"unused\.act_quant: .*forward path"):
        mixq.calibrate(model, _batches(1), progress=False)
