"""The fast engine's C++ kernels, bit for bit against a plain int64 implementation of the
fused layer contract (docs/integer.md), on every instruction set this CPU has."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mixq.errors import FastEngineUnavailableError

try:
    from mixq.integer.fast import FusedConv, kernels, set_isa, supported_isas

    kernels()
    ISAS = supported_isas()
except FastEngineUnavailableError as exc:  # no compiler: the engines fall back
    pytest.skip(f"fast kernels unavailable: {exc}", allow_module_level=True)


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest) -> Iterator[str]:
    set_isa(request.param)
    yield request.param
    set_isa(None)


def contract(
    x: torch.Tensor,
    weight: torch.Tensor,
    m: torch.Tensor,
    c: torch.Tensor,
    b: torch.Tensor,
    conv: dict[str, Any] | None,
    low: int,
    high: int,
    residual: torch.Tensor | None = None,
    m_res: int = 0,
) -> torch.Tensor:
    """acc = W x (int64), t = acc*M + B (+ R*M_res), y = clamp((t + 2^(c-1)) >> c)."""
    if conv is None:
        acc = x.long() @ weight.long().t()
        dim_shape = [1] * (acc.dim() - 1) + [-1]
    else:
        # float64 holds every product and partial sum exactly (all below 2^53).
        acc = F.conv2d(x.double(), weight.double(), **conv).round().long()
        dim_shape = [1, -1, 1, 1]
    t = acc * m.view(dim_shape) + b.view(dim_shape)
    if residual is not None:
        t = t + residual.long() * m_res
    shift = c.view(dim_shape)
    half = torch.where(shift > 0, 1 << (shift - 1).clamp_min(0), 0)
    return ((t + half) >> shift).clamp(low, high)


def random_layer(
    g: torch.Generator, rows: int, per_group: int, k: tuple[int, int], signed: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    weight = torch.randint(-128, 128, (rows, per_group, *k), generator=g)
    m = torch.randint(1, 2**31, (rows,), generator=g)
    c = torch.randint(20, 40, (rows,), generator=g)
    # Offsets of either sign, a few output steps wide.
    b = torch.randint(-(2**8), 2**8, (rows,), generator=g) << c
    return weight, m, c, b + (1 << (c - 1)) * torch.randint(-1, 2, (rows,), generator=g)


def levels(g: torch.Generator, shape: tuple[int, ...], signed: bool) -> torch.Tensor:
    low, high = (-128, 128) if signed else (0, 256)
    x = torch.randint(low, high, shape, generator=g)
    return x.to(torch.int8 if signed else torch.uint8)


CONV_CASES = [
    # (C, R, H, W, kernel, stride, padding, groups, signed)
    (16, 16, 9, 9, 3, 1, 1, 1, False),
    (3, 16, 8, 7, 3, 1, 1, 1, True),  # K = 27, not a multiple of 4; int8 input
    (5, 19, 7, 6, 3, 2, 1, 1, False),  # odd channels and rows, stride 2
    (32, 64, 5, 5, 1, 1, 0, 1, False),  # 1x1: GEMM rows straight from the input
    (12, 70, 6, 6, 3, 2, 0, 1, True),  # 70 rows: 4+1 row blocks, masked tail
    (8, 12, 6, 6, 3, 1, 2, 4, False),  # grouped
    (10, 10, 7, 7, 3, 1, 1, 10, True),  # depthwise
    (6, 12, 5, 5, 5, 1, 2, 6, False),  # depthwise with multiplier 2, 5x5
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_conv_is_bit_identical_to_the_contract(isa: str, case: tuple, batch: int) -> None:
    c_in, rows, h, w, k, stride, pad, groups, signed = case
    g = torch.Generator().manual_seed(hash((case, batch)) % 2**31)
    weight, m, c, b = random_layer(g, rows, c_in // groups, (k, k), signed)
    conv = {"stride": (stride, stride), "padding": (pad, pad), "dilation": (1, 1), "groups": groups}
    x = levels(g, (batch, c_in, h, w), signed)
    expected = contract(x, weight, m, c, b, conv, 0, 255)
    got = FusedConv(weight, m, c, b, conv, 0, 255)(x)
    assert got.dtype == torch.uint8
    assert torch.equal(got.long(), expected)
    assert 0 < int((expected > 0).sum()) < expected.numel()  # the clamp does cut


def test_residual_int16_output_and_negative_values(isa: str) -> None:
    g = torch.Generator().manual_seed(1)
    weight, m, c, _ = random_layer(g, 24, 8, (3, 3), False)
    c = torch.full((24,), 30)  # one shift per layer, as with a residual
    b = torch.randint(-(2**40), 2**40, (24,), generator=g)
    conv = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    x = levels(g, (2, 8, 6, 6), False)
    residual = torch.randint(-32767, 32768, (2, 24, 6, 6), generator=g).to(torch.int16)
    expected = contract(x, weight, m, c, b, conv, -32767, 32767, residual, 1 << 29)
    got = FusedConv(weight, m, c, b, conv, -32767, 32767, residual_multiplier=1 << 29)(x, residual)
    assert got.dtype == torch.int16
    assert torch.equal(got.long(), expected)
    assert int((expected < 0).sum()) > 0


@pytest.mark.parametrize(
    ("second_m", "second_c"),
    [
        (1 << 30, 38),  # a residual sum to the next layer's input grid: a power of two
        (1 << 5, 5),  # 2^k with k = c: the levels themselves
        (1, 0),
        (1 << 12, 3),  # 2^k with k > c: the int64 path
        (1_518_500_250, 41),  # any multiplier
    ],
)
@pytest.mark.parametrize("wide_multiplier", [False, True])
def test_second_output_is_the_first_requantised(
    isa: str, second_m: int, second_c: int, wide_multiplier: bool
) -> None:
    g = torch.Generator().manual_seed(second_m % 1000 + second_c)
    rows = 40  # two full row blocks and a masked one
    weight, m, c, _ = random_layer(g, rows, 8, (3, 3), False)
    if wide_multiplier:  # above 2^31: the 64-bit multiply of the 8-row epilogue
        weight = weight.clamp(-3, 3)
        m = m + (1 << 31)
    c = torch.full((rows,), 32)
    b = torch.randint(-(2**40), 2**40, (rows,), generator=g)
    conv = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    x = levels(g, (2, 8, 5, 7), False)
    residual = torch.randint(-20000, 20000, (2, rows, 5, 7), generator=g).to(torch.int16)
    layer = FusedConv(weight, m, c, b, conv, -32767, 32767, residual_multiplier=1 << 28)
    layer.also_requantize(second_m, second_c, 0, 15)
    first, second = layer(x, residual)
    expected = contract(x, weight, m, c, b, conv, -32767, 32767, residual, 1 << 28)
    half = (1 << (second_c - 1)) if second_c > 0 else 0
    expected_second = ((expected * second_m + half) >> second_c).clamp(0, 15)
    assert (first.dtype, second.dtype) == (torch.int16, torch.uint8)
    assert torch.equal(first.long(), expected)
    assert torch.equal(second.long(), expected_second)
    assert 0 < int((expected_second > 0).sum()) < expected_second.numel()


def test_ties_round_half_up_and_shift_zero(isa: str) -> None:
    # acc * M + B lands exactly on k + 1/2 output steps: (t + 2^(c-1)) >> c rounds up,
    # for negative t too; rows with c = 0 take no rounding term.
    weight = torch.ones(16, 4, 1, 1, dtype=torch.int64)
    m = torch.ones(16, dtype=torch.int64)
    c = torch.tensor([1] * 8 + [0] * 8)
    b = torch.tensor([-9, -7, -5, -3, -1, 1, 3, 5, -3, -1, 0, 1, 2, 3, 4, 5])
    conv = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
    x = torch.tensor([0, 1, 2, 3], dtype=torch.int8).view(1, 4, 1, 1).expand(3, 4, 1, 1)
    x = (x - torch.arange(3).view(3, 1, 1, 1).to(torch.int8)).contiguous()
    expected = contract(x, weight, m, c, b, conv, -128, 127)
    got = FusedConv(weight, m, c, b, conv, -128, 127)(x)
    assert got.dtype == torch.int8
    assert torch.equal(got.long(), expected)
    assert expected[0, :5].flatten().tolist() == [-1, 0, 1, 2, 3]  # (6 + b + 1) >> 1


def test_linear_last_layer_returns_int64_and_sequences(isa: str) -> None:
    g = torch.Generator().manual_seed(2)
    weight = torch.randint(-128, 128, (10, 37), generator=g)
    m = torch.randint(1, 2**31, (10,), generator=g)
    c = torch.randint(0, 12, (10,), generator=g)
    b = torch.randint(-(2**30), 2**30, (10,), generator=g)
    x = levels(g, (4, 5, 37), True)
    expected = contract(x, weight, m, c, b, None, -(2**31) + 1, 2**31 - 1)
    got = FusedConv(weight, m, c, b, None, -(2**31) + 1, 2**31 - 1)(x)
    assert got.shape == (4, 5, 10) and got.dtype == torch.int32
    assert torch.equal(got.long(), expected)
    unclamped = FusedConv(weight, m, c, b, None, None, None)(x)
    assert unclamped.dtype == torch.int64
    assert torch.equal(unclamped, contract(x, weight, m, c, b, None, -(2**62), 2**62))


def test_elementwise_and_pooling_kernels() -> None:
    ops = kernels()
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-32767, 32768, (2, 6, 5, 5), generator=g).to(torch.int16)
    m, c = 1 << 30, 34
    half = 1 << 33
    assert torch.equal(
        ops.requantize(x, m, c, 0, 255, 0).long(), ((x.long() * m + half) >> c).clamp(0, 255)
    )
    y = torch.randint(0, 256, (2, 6, 5, 5), generator=g).to(torch.uint8)
    added = ops.add_levels(x, y, 3, -5, 2, -300, 300, 2).long()
    assert torch.equal(added, ((x.long() * 3 - y.long() * 5 + 2) >> 2).clamp(-300, 300))
    pooled = ops.global_avg_pool(x, 654321, 24, -127, 127, 1)
    total = x.long().sum(dim=(2, 3))
    assert torch.equal(pooled.long(), ((total * 654321 + (1 << 23)) >> 24).clamp(-127, 127))
    low = torch.iinfo(torch.int64).min
    padded = F.pad(x.long(), (1, 1, 1, 1), value=low)
    windows = padded.unfold(2, 3, 2).unfold(3, 3, 2).amax(dim=(-2, -1))
    assert torch.equal(ops.max_pool(x, 3, 2, 1).long(), windows)


def test_entrance_rounds_half_to_even_like_torch() -> None:
    step = torch.tensor(0.0314359, dtype=torch.float32)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 3
    ties = (torch.arange(-6, 6).float() + 0.5) * step  # k + 1/2 steps, as float32 gives them
    x.view(-1)[: ties.numel()] = ties
    expected = torch.round((x / step).clamp(-127, 127)).long()
    got = kernels().quantize_input(x, float(step), -127, 127, 1)
    assert got.dtype == torch.int8
    assert torch.equal(got.long(), expected)


def test_unknown_or_missing_instruction_sets_are_typed_errors() -> None:
    with pytest.raises(FastEngineUnavailableError, match="unknown instruction set"):
        set_isa("neon")
