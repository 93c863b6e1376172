"""Fake quantisation: outputs on the grid, idempotence, nearest rounding, STE/LSQ gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _strategies import candidates, signed_levels, weights_and_scales
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mixq.fakequant import (
    MIN_SCALE,
    fake_quant_rows,
    lsq_gradient_factor,
    quantize_uniform,
    round_to_grid,
    scale_gradient,
)
from mixq.grid_tensors import signed_grid
from mixq.schemes import Candidate

SETTINGS = settings(max_examples=60, deadline=None)


def _distance_to_grid(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    return (values.double().unsqueeze(-1) - levels).abs().min(dim=-1).values


@SETTINGS
@given(candidate=candidates, data=weights_and_scales())
def test_outputs_lie_on_the_grid(
    candidate: Candidate, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    w, alpha = data
    out = fake_quant_rows(w, alpha, candidate)
    assert out.shape == w.shape
    normalised = out.double() / alpha.double().unsqueeze(1)
    # alpha * level for every element, up to float32 rounding of the product.
    assert float(_distance_to_grid(normalised, signed_levels(candidate)).max()) <= 1e-6
    assert bool((out.abs() <= alpha.unsqueeze(1) * (1 + 1e-6)).all())
    # And the level is the one nearest to the clipped input.
    x = (w / alpha.unsqueeze(1)).clamp(-1, 1)
    expected = round_to_grid(x, candidate) * alpha.unsqueeze(1)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-7)


@SETTINGS
@given(candidate=candidates, data=weights_and_scales())
def test_quantising_twice_changes_nothing(
    candidate: Candidate, data: tuple[torch.Tensor, torch.Tensor]
) -> None:
    w, alpha = data
    once = fake_quant_rows(w, alpha, candidate)
    twice = fake_quant_rows(once, alpha, candidate)
    scale = alpha.unsqueeze(1)
    # Same level for every element, same value up to one float32 rounding.
    assert torch.equal(
        round_to_grid((once / scale).clamp(-1, 1), candidate),
        round_to_grid((twice / scale).clamp(-1, 1), candidate),
    )
    torch.testing.assert_close(twice, once, rtol=1e-6, atol=1e-7)


@SETTINGS
@given(
    candidate=candidates,
    x=arrays(np.float32, st.integers(1, 64), elements=st.floats(-1, 1, width=32)),
)
def test_round_to_grid_is_the_nearest_level(candidate: Candidate, x: np.ndarray) -> None:
    values = torch.from_numpy(x)
    got = round_to_grid(values, candidate)
    levels = signed_grid(candidate)[0]
    assert bool(torch.isin(got, levels).all())
    best = _distance_to_grid(values, levels.double())
    # Ties aside (either neighbour is then nearest), the result is the brute-force argmin.
    assert bool(((values.double() - got.double()).abs() <= best + 1e-7).all())


@pytest.mark.parametrize("name", ["sp2-4", "fixed-3", "pot-4", "sp2-8", "fixed-8"])
def test_round_to_grid_keeps_levels_and_sends_midpoints_down(name: str) -> None:
    candidate = Candidate.parse(name)
    levels, midpoints = signed_grid(candidate)
    assert torch.equal(round_to_grid(levels, candidate), levels)
    assert torch.equal(round_to_grid(midpoints, candidate), levels[:-1])


def test_round_to_grid_by_hand() -> None:
    sp2 = Candidate.parse("sp2-4")  # 0, 1/8, 1/4, 1/2, 5/8, 3/4, 1
    x = torch.tensor([0.3, -0.56, 0.9, 0.06, 0.07, -0.8, 0.37, 0.38])
    expected = torch.tensor([0.25, -0.5, 1.0, 0.0, 0.125, -0.75, 0.25, 0.5])
    assert torch.equal(round_to_grid(x, sp2), expected)
    pot = Candidate.parse("pot-3")  # 0, 1/4, 1/2, 1
    assert torch.equal(
        round_to_grid(torch.tensor([0.1, 0.13, 0.7, 0.76, -0.3]), pot),
        torch.tensor([0.0, 0.25, 0.5, 1.0, -0.25]),
    )


def test_fake_quant_rows_by_hand() -> None:
    w = torch.tensor([[0.9, -0.2, 0.05, 3.0], [2.0, 1.1, -0.6, -5.0]])
    out = fake_quant_rows(w, torch.tensor([1.0, 2.0]), Candidate.parse("fixed-3"))
    expected = torch.tensor([[1.0, -1 / 3, 0.0, 1.0], [2.0, 4 / 3, -2 / 3, -2.0]])
    torch.testing.assert_close(out, expected)


def test_zero_scale_does_not_divide_by_zero() -> None:
    w = torch.zeros(2, 3)
    out = fake_quant_rows(w, torch.zeros(2), Candidate.parse("sp2-4"))
    assert torch.equal(out, w)
    out = fake_quant_rows(torch.ones(1, 2), torch.zeros(1), Candidate.parse("fixed-4"))
    assert torch.allclose(out, torch.full((1, 2), MIN_SCALE))


# -- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sp2-4", "fixed-4", "pot-3", "fixed-8", "sp2-6"])
def test_ste_and_lsq_gradients(name: str) -> None:
    candidate = Candidate.parse(name)
    generator = torch.Generator().manual_seed(0)
    # |w / alpha| is never exactly 1, where the clip's gradient would be ambiguous.
    w = torch.tensor(
        [[0.3, -0.7, 1.5, -2.0, 0.05, 0.93], [0.2, -0.45, 0.6, -0.1, 0.7, -0.51]],
        requires_grad=True,
    )
    alpha = torch.tensor([1.0, 0.5], requires_grad=True)
    upstream = torch.randn(w.shape, generator=generator)
    (fake_quant_rows(w, alpha, candidate) * upstream).sum().backward()

    x = w.detach() / alpha.detach().unsqueeze(1)
    inside = x.abs() < 1
    assert inside.any() and (~inside).any()
    torch.testing.assert_close(w.grad, upstream * inside)
    d_alpha = torch.where(inside, round_to_grid(x.clamp(-1, 1), candidate) - x, x.sign())
    torch.testing.assert_close(alpha.grad, (upstream * d_alpha).sum(dim=1))


def test_alpha_gradient_outside_the_clip_range_is_the_true_derivative() -> None:
    # Outside the clip range the output is alpha * sign(w): a central difference agrees.
    candidate = Candidate.parse("sp2-4")
    w = torch.tensor([[2.5, -3.0]], dtype=torch.float64)
    alpha = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    fake_quant_rows(w, alpha, candidate).sum().backward()
    h = 1e-4
    numeric = (
        fake_quant_rows(w, alpha.detach() + h, candidate).sum()
        - fake_quant_rows(w, alpha.detach() - h, candidate).sum()
    ) / (2 * h)
    assert float(alpha.grad) == pytest.approx(float(numeric)) == pytest.approx(0.0)
    w2 = torch.tensor([[2.5, 3.0]], dtype=torch.float64)
    alpha.grad = None
    fake_quant_rows(w2, alpha, candidate).sum().backward()
    assert float(alpha.grad) == pytest.approx(2.0)


def test_scale_gradient_keeps_values_and_scales_the_gradient() -> None:
    t = torch.tensor([0.3, 2.0, 0.1 + 1e-7, 3.3e-5], requires_grad=True)
    out = scale_gradient(t, 0.25)
    assert torch.equal(out, t.detach())  # bit for bit: the integer engine relies on it
    out.sum().backward()
    torch.testing.assert_close(t.grad, torch.full((4,), 0.25))


@pytest.mark.parametrize(
    ("name", "elements", "levels"),
    [("fixed-4", 9, 7), ("sp2-4", 16, 6), ("pot-2", 1, 1), ("fixed-8", 0, 127)],
)
def test_lsq_gradient_factor(name: str, elements: int, levels: int) -> None:
    expected = 1 / math.sqrt(max(elements, 1) * levels)
    assert lsq_gradient_factor(elements, Candidate.parse(name)) == pytest.approx(expected)


# -- uniform activation quantisation ---------------------------------------------------------


@SETTINGS
@given(
    bits=st.integers(2, 8),
    signed=st.booleans(),
    alpha=st.floats(0.1, 10),
    x=arrays(np.float32, st.integers(1, 40), elements=st.floats(-20, 20, width=32)),
)
def test_quantize_uniform_on_the_grid(bits: int, signed: bool, alpha: float, x: np.ndarray) -> None:
    values = torch.from_numpy(x)
    a = torch.tensor(alpha, dtype=torch.float32)
    out = quantize_uniform(values, a, bits, signed=signed)
    top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    step = a / top
    codes = out / step
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-3)
    assert float(codes.round().min()) >= (-top if signed else 0)
    assert float(codes.round().max()) <= top
    # Nearest level of the clipped input (within half a step, plus float slack).
    low = -float(a) if signed else 0.0
    assert bool(((values.clamp(low, float(a)) - out).abs() <= step / 2 + 1e-5).all())


def test_quantize_uniform_by_hand() -> None:
    out = quantize_uniform(torch.tensor([0.1, 0.52, 3.0, -1.0]), torch.tensor(1.0), 2, signed=False)
    torch.testing.assert_close(out, torch.tensor([0.0, 2 / 3, 1.0, 0.0]))
    out = quantize_uniform(torch.tensor([0.4, -0.4, -7.0, 0.1]), torch.tensor(1.0), 3, signed=True)
    torch.testing.assert_close(out, torch.tensor([1 / 3, -1 / 3, -1.0, 0.0]))


def test_quantize_uniform_gradients() -> None:
    x = torch.tensor([-0.5, 0.2, 0.7, 1.3, 2.4], requires_grad=True)
    alpha = torch.tensor(2.0, requires_grad=True)
    bits, top = 3, 7
    quantize_uniform(x, alpha, bits, signed=False).sum().backward()
    v = x.detach() / (2.0 / top)
    inside = (v > 0) & (v < top)
    torch.testing.assert_close(x.grad, inside.float())
    # d/d alpha: (round(v) - v) / top inside, 1 above the clip, 0 below zero.
    expected = torch.where(inside, (v.round() - v) / top, (v >= top).float()).sum()
    torch.testing.assert_close(alpha.grad, expected)
