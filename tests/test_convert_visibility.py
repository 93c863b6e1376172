"""What quantize decides on its own is said: float-only layers, unfolded BatchNorms, batches
left out; batches it cannot use are refused before any work; layer mappings extend."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import mixq
from mixq.errors import (
    CalibrationDataWarning,
    CalibrationError,
    FloatLayerWarning,
    UnfoldedBatchNormWarning,
    UnsupportedLayerError,
)
from mixq.mappings import register_layer_mapping

FAST = mixq.Recipe.preset("fixed8", first_last=None)


class Conv1D(nn.Module):
    """Hugging Face GPT-2's Conv1D: a Linear with its weight stored as (in, out)."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class Sequence1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3)
        self.proj = Conv1D(6, 8)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).mean(dim=-1)
        return self.head(self.proj(h))


def test_conv1d_and_gpt2_conv1d_stay_float_with_a_warning_and_are_listed() -> None:
    with pytest.warns(FloatLayerWarning, match=r"Conv1D, Conv1d stay in float.*conv, proj"):
        q = mixq.quantize(Sequence1d(), FAST, progress=False)
    summary = mixq.describe(q)
    assert [layer.name for layer in summary.layers] == ["head"]
    assert summary.float_layers == ["conv", "proj"]
    assert "float layers: conv, proj" in str(summary)


class SharedConv(nn.Module):
    """One conv used twice: its BN cannot be folded for one use only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(self.conv(x)))
        return self.head(y.mean(dim=(2, 3)))


def test_an_unfoldable_batchnorm_is_warned_and_listed() -> None:
    with pytest.warns(UnfoldedBatchNormWarning, match="not folded, kept in float: bn "):
        q = mixq.quantize(SharedConv().eval(), FAST, progress=False)
    summary = mixq.describe(q)
    assert summary.unfolded_bn == ["bn"]
    assert "unfolded BatchNorms: bn" in str(summary)


def test_a_folded_or_skipped_conv_s_batchnorm_is_not_warned() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = mixq.quantize(net, FAST, progress=False)
        assert mixq.describe(q).unfolded_bn == []
        skip = mixq.Recipe(FAST.default, (mixq.Rule("0", skip=True),))
        with pytest.raises(mixq.NoQuantizableLayerError):
            mixq.quantize(net, skip, progress=False)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))


@pytest.mark.parametrize(
    ("batches", "message"),
    [
        ([torch.randn(4, 5)], r"batch 1 .*float32 tensor \(4, 5\).* takes 3 features, not 5"),
        ([torch.ones(4, 3, dtype=torch.int64)], r"batch 1 \(a int64 tensor .* float is usual"),
        ([{"x": torch.randn(4, 3)}], r"batch 1 \(a dict with keys 'x'\) cannot be fed"),
        ([torch.randn(4, 3), "text"], r"batch 2 is type str"),
        ([()], r"batch 1 is a tuple of 0"),
        ([torch.randn(0, 3)], r"batch 1 is empty"),
        (torch.randn(4, 3), r"must be an iterable of batches .* got Tensor"),
        ([], r"yielded no batches"),
    ],
)
def test_bad_calibration_batches_are_named_before_any_work(batches: object, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        mixq.quantize(_mlp(), FAST, calibration_data=batches, progress=False)  # type: ignore[arg-type]


def test_conv_channel_mismatch_names_the_channels() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    with pytest.raises(CalibrationError, match="first conv takes 3 channels, the batch has 1"):
        mixq.calibrate(mixq.quantize(net, FAST, progress=False), [torch.randn(2, 1, 8, 8)])


def test_dropped_batches_are_said_unless_the_count_is_given() -> None:
    data = [torch.randn(4, 3) for _ in range(10)]
    with pytest.warns(CalibrationDataWarning, match="first 8 of 10 batches"):
        mixq.quantize(_mlp(), FAST, calibration_data=data, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mixq.quantize(_mlp(), FAST, calibration_data=data, calibration_batches=3, progress=False)
        q = mixq.quantize(_mlp(), FAST, progress=False)
        assert mixq.calibrate(q, data, batches=10, progress=False) == 10
    with pytest.warns(CalibrationDataWarning, match="first 8 of more than 8"):
        mixq.calibrate(q, iter(data), progress=False)


class Scaled(nn.Linear):
    """A user's own Linear subclass: the Linear mapping covers it (nearest base)."""


class Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * torch.sigmoid(x)


def test_layer_mappings_cover_subclasses_and_extend() -> None:
    q = mixq.quantize(nn.Sequential(Scaled(4, 2)), FAST, progress=False)
    assert isinstance(q[0], mixq.QuantLinear)

    def build_gated(module: Gated, assignment: object, **options: object) -> nn.Module:
        quantized = Gated()
        quantized.inner = mixq.QuantLinear.from_float(
            module.inner, assignment, act_bits=options["act_bits"]
        )
        return quantized.inner

    register_layer_mapping(Gated, build_gated, replace=True)  # type: ignore[arg-type]
    net = nn.Sequential(Gated())
    assert mixq.quantizable_layer_names(net) == ["0", "0.inner"]
    with pytest.raises(UnsupportedLayerError, match="Linear already has a layer mapping"):
        register_layer_mapping(nn.Linear, build_gated)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedLayerError, match=r"needs an nn\.Module class"):
        register_layer_mapping(int, build_gated)  # type: ignore[arg-type]


def test_describe_prints_the_table() -> None:
    q = mixq.quantize(_mlp(), FAST, calibration_data=[torch.randn(8, 3)], progress=False)
    text = str(mixq.describe(q))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["layer", "kind", "rows"]
    assert lines[2].split()[:4] == ["0", "linear", "8", "fixed-8:8"]
    summary = mixq.describe(q)
    # 3*8 + 8*2 weights at 8 bits; stored: plus 10 rows x (32-bit scale + 32-bit bias).
    assert summary.weights_only_kib * 8192 == 40 * 8
    assert summary.weight_kib * 8192 == 40 * 8 + 10 * 64
    assert f"model size {summary.weight_kib:.1f} KiB" in text
