"""Fractional bit widths: interpolation between neighbouring grids, and its gradients."""

from __future__ import annotations

import pytest
import torch

from mixq.dfq import FractionalBitsQuantizer
from mixq.errors import SchemeError
from mixq.fakequant import fake_quant_rows
from mixq.schemes import Candidate


def _rows() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(6, 20, generator=generator)
    return w, w.abs().amax(dim=1)


@pytest.mark.parametrize("scheme", ["fixed", "sp2", "pot"])
@pytest.mark.parametrize("bits", [3, 4, 6])
def test_integer_bits_equal_plain_fake_quantisation(scheme: str, bits: int) -> None:
    w, alpha = _rows()
    q = FractionalBitsQuantizer(alpha, 20, scheme, init_bits=bits)
    expected = fake_quant_rows(w, alpha, Candidate.parse(f"{scheme}-{bits}"))
    torch.testing.assert_close(q(w), expected)


def test_fractional_bits_mix_the_two_neighbouring_grids() -> None:
    w, alpha = _rows()
    q = FractionalBitsQuantizer(alpha, 20, "fixed", init_bits=4.0)
    with torch.no_grad():
        q.bits.copy_(torch.tensor([2.0, 2.25, 4.5, 5.75, 7.9, 8.0]))
    out = q(w)
    for row, bits in enumerate([2.0, 2.25, 4.5, 5.75, 7.9, 8.0]):
        low, share = int(bits), bits - int(bits)
        lo = fake_quant_rows(
            w[row : row + 1], alpha[row : row + 1], Candidate.parse(f"fixed-{low}")
        )
        hi = lo
        if low < 8:
            hi = fake_quant_rows(
                w[row : row + 1], alpha[row : row + 1], Candidate.parse(f"fixed-{low + 1}")
            )
        torch.testing.assert_close(out[row : row + 1], (1 - share) * lo + share * hi)


def test_bits_weights_and_scales_receive_gradient() -> None:
    w, alpha = _rows()
    w.requires_grad_(True)
    q = FractionalBitsQuantizer(alpha, 20, "fixed", init_bits=3.5)
    target = torch.randn(6, 20, generator=torch.Generator().manual_seed(1))
    (q(w) - target).pow(2).sum().backward()
    assert q.bits.grad is not None and q.bits.grad.abs().min() > 0
    assert q.alpha.grad is not None and q.alpha.grad.abs().max() > 0
    assert w.grad is not None and w.grad.abs().max() > 0
    # d out / d b = Q_4(w) - Q_3(w), so the chain rule gives this exactly.
    with torch.no_grad():
        q3 = fake_quant_rows(w, alpha, Candidate.parse("fixed-3"))
        q4 = fake_quant_rows(w, alpha, Candidate.parse("fixed-4"))
        out = 0.5 * q3 + 0.5 * q4
        expected = (2 * (out - target) * (q4 - q3)).sum(dim=1)
    torch.testing.assert_close(q.bits.grad, expected)


def test_one_bit_width_per_layer_and_projection_into_range() -> None:
    _, alpha = _rows()
    q = FractionalBitsQuantizer(alpha, 20, "fixed", init_bits=9.0, granularity="layer")
    assert q.bits.numel() == 1 and q.row_bits().tolist() == [8.0] * 6
    with torch.no_grad():
        q.bits.fill_(0.5)
    q.project()
    assert q.bits.item() == 2.0


def test_bad_ranges_raise() -> None:
    _, alpha = _rows()
    with pytest.raises(SchemeError, match="sp2 bits"):
        FractionalBitsQuantizer(alpha, 20, "sp2", init_bits=4, min_bits=2)
    with pytest.raises(SchemeError, match="granularity"):
        FractionalBitsQuantizer(alpha, 20, "fixed", init_bits=4, granularity="channel")
