"""ActQuantizer: calibration (sign, percentile, MSE), the uniform grid, errors, state."""

from __future__ import annotations

import pytest
import torch

from mixq.errors import CalibrationError, SchemeError
from mixq.fakequant import quantize_uniform
from mixq.nn.act_quant import _PERCENTILE, ActQuantizer


def _calibrated(data: list[torch.Tensor], **kwargs: object) -> ActQuantizer:
    q = ActQuantizer(**kwargs)
    q.start_calibration()
    for batch in data:
        assert q(batch) is batch  # observing passes the input through untouched
    q.finish_calibration()
    return q


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_unsigned_after_relu_and_signed_with_negatives() -> None:
    relu_out = torch.randn(4, 8, 5, 5, generator=_gen()).relu()
    q = _calibrated([relu_out], bits=4)
    assert q.signed is False and q.levels == 15
    q = _calibrated([relu_out, torch.tensor([-1e-3])], bits=4)
    assert q.signed is True and q.levels == 7
    # An explicit choice is kept whatever the data.
    q = _calibrated([relu_out], bits=4, signed=True)
    assert q.signed is True


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_output_on_the_uniform_grid(bits: int, signed: bool) -> None:
    x = torch.randn(2000, generator=_gen(bits)) * 3
    if not signed:
        x = x.relu()
    q = _calibrated([x], bits=bits)
    assert q.signed is signed
    out = q(x).detach()
    codes = out / q.step
    torch.testing.assert_close(codes, codes.round(), rtol=0, atol=1e-3)
    top = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    assert float(codes.round().max()) <= top
    assert float(codes.round().min()) >= (-top if signed else 0)
    torch.testing.assert_close(q.step, q.alpha.detach() / top)
    torch.testing.assert_close(out, quantize_uniform(x, q.alpha.detach(), bits, signed=signed))


def test_percentile_and_mse_clips() -> None:
    x = torch.randn(200_000, generator=_gen(1)).abs()
    percentile = _calibrated([x[:60_000], x[60_000:120_000]], bits=4, method="percentile")
    sample = torch.cat([x[:60_000], x[60_000:120_000]])
    expected = torch.sort(sample).values[round(_PERCENTILE * sample.numel()) - 1]
    torch.testing.assert_close(percentile.alpha.detach(), expected)
    assert 3.3 < float(percentile.alpha.detach()) < 4.5  # the 99.99th percentile of |N(0, 1)|

    mse = _calibrated([x[:60_000]], bits=4, method="mse")
    # MSE clips a Gaussian much tighter at 4 bits, and beats the percentile's error.
    assert float(mse.alpha.detach()) < 0.85 * float(percentile.alpha.detach())
    probe = x[:60_000]

    def error(alpha: torch.Tensor) -> float:
        return float((quantize_uniform(probe, alpha, 4, signed=False) - probe).pow(2).mean())

    assert error(mse.alpha.detach()) < error(percentile.alpha.detach())
    # ... and is the best of its 64 candidate clips.
    peak = probe.max()
    best = min(error(peak * f) for f in torch.linspace(1 / 64, 1, 64))
    assert error(mse.alpha.detach()) == pytest.approx(best)


def test_percentile_ignores_a_single_outlier() -> None:
    x = torch.rand(100_000, generator=_gen(2))
    x[7] = 1000.0
    q = _calibrated([x], bits=8, method="percentile")
    assert 0.99 < float(q.alpha.detach()) <= 1.0


def test_uncalibrated_forward_raises() -> None:
    q = ActQuantizer(bits=8)
    assert not bool(q.calibrated)
    with pytest.raises(CalibrationError, match="not calibrated"):
        q(torch.ones(3))
    q.enabled = False  # disabled quantisers pass values through even uncalibrated
    x = torch.ones(3)
    assert q(x) is x


def test_empty_calibration_raises() -> None:
    q = ActQuantizer(bits=8)
    q.start_calibration()
    with pytest.raises(CalibrationError, match="no activations were observed"):
        q.finish_calibration()
    q.start_calibration()
    q(torch.empty(0, 4))  # an empty batch is no observation
    with pytest.raises(CalibrationError, match="no activations were observed"):
        q.finish_calibration()
    assert not bool(q.calibrated)


def test_non_finite_calibration_data() -> None:
    q = ActQuantizer(bits=8)
    q.start_calibration()
    with pytest.raises(CalibrationError, match="NaN or Inf"):
        q(torch.tensor([1.0, float("inf")]))


def test_bad_settings() -> None:
    for bits in (1, 17, 4.0, True):
        with pytest.raises(SchemeError, match=r"activation bits must be an integer in 2\.\.16"):
            ActQuantizer(bits=bits)  # type: ignore[arg-type]
    with pytest.raises(CalibrationError, match="unknown calibration method 'max'"):
        ActQuantizer(bits=8, method="max")  # type: ignore[arg-type]


def test_lsq_gradient() -> None:
    q = _calibrated([torch.linspace(0, 2, 100)], bits=3, method="percentile")
    x = torch.tensor([[0.1, 0.75, 1.2, 5.0]], requires_grad=True)
    q(x).sum().backward()
    alpha = float(q.alpha.detach())
    v = x.detach() / (alpha / 7)
    inside = (v > 0) & (v < 7)
    torch.testing.assert_close(x.grad, inside.float())
    factor = 1 / (4 * 7) ** 0.5  # one sample of 4 elements, 7 positive levels
    expected = torch.where(inside, (v.round() - v) / 7, (v >= 7).float()).sum() * factor
    torch.testing.assert_close(q.alpha.grad, expected)


def test_state_dict_round_trip() -> None:
    x = torch.randn(500, generator=_gen(3))
    source = _calibrated([x], bits=6, method="percentile")
    state = source.state_dict()
    assert state["_extra_state"] == {"bits": 6, "signed": True, "method": "percentile"}
    target = ActQuantizer(bits=8)
    target.load_state_dict(state)
    assert (target.bits, target.signed, target.method) == (6, True, "percentile")
    assert bool(target.calibrated)
    assert torch.equal(target(x), source(x))
    assert "bits=6, signed, method=percentile" in repr(target)
    assert "auto" in repr(ActQuantizer(bits=4))


def _full_clip_search_oracle(q: ActQuantizer, sample: torch.Tensor) -> torch.Tensor:
    """The activation MSE search as it was before screening: all 64 fractions."""
    magnitude = sample.abs() if q.signed else sample.clamp_min(0)
    peak = magnitude.max().clamp_min(1e-8)
    best, best_error = peak, float("inf")
    for fraction in torch.linspace(1.0 / 64, 1.0, 64):
        alpha = peak * fraction
        error = float(
            (quantize_uniform(sample, alpha, q.bits, signed=bool(q.signed)) - sample).pow(2).mean()
        )
        if error < best_error:
            best, best_error = alpha, error
    return best


def _activations() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    conv = torch.nn.Conv2d(3, 16, 3, padding=1)
    with torch.no_grad():
        feature = conv(torch.randn(4, 3, 32, 32, generator=g))  # 2^16 values: all kept
    return [
        feature.relu(),  # post-ReLU: many exact zeros, unsigned
        feature,  # signed
        torch.randn(20_000, generator=g).pow(3),  # heavy tails: clipping pays
        torch.randint(0, 16, (5000,), generator=g).float() / 15,  # exactly on a 4-bit grid
        torch.full((3000,), 0.5),  # every clip of one value
        torch.tensor([0.0, 1.0]),
    ]


@pytest.mark.parametrize(("bits", "threads"), [(2, 1), (4, 1), (8, 2), (16, 1)])
def test_screened_clip_search_equals_the_full_search_bitwise(bits: int, threads: int) -> None:
    torch.set_num_threads(threads)
    # Two threads split sums of 2^15 values or more: one such tensor is enough there.
    samples = _activations() if threads == 1 else _activations()[:1]
    try:
        for x in samples:
            q = ActQuantizer(bits)
            q.start_calibration()
            q(x)
            q.finish_calibration()
            oracle = ActQuantizer(bits, signed=q.signed)
            expected = _full_clip_search_oracle(oracle, x.flatten())
            assert torch.equal(q.alpha.detach(), expected.clamp_min(1e-8)), (bits, x.shape)
    finally:
        torch.set_num_threads(1)


def test_screened_clip_search_on_resnet20_activations(shared_data, monkeypatch) -> None:
    """During a real calibration, every clip equals the full search's on the same sample."""
    import mixq
    from mixq.data import cifar10_loader
    from mixq.models import load_pretrained_cifar_resnet, resnet20

    model = load_pretrained_cifar_resnet(
        resnet20(), shared_data / "resnet-cifar10" / "resnet20-12fca82f.th"
    )
    calib = list(cifar10_loader(shared_data / "cifar10-jpeg", "train", 16, limit=32))
    screened = ActQuantizer._mse_clip
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def both(self: ActQuantizer, sample: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        chosen = screened(self, sample, magnitude)
        pairs.append((chosen, _full_clip_search_oracle(self, sample)))
        return chosen

    monkeypatch.setattr(ActQuantizer, "_mse_clip", both)
    for bits in (8, 4):
        q = mixq.quantize(model, mixq.Recipe.preset("rmsmp", act_bits=bits), progress=False)
        mixq.calibrate(q, calib, progress=False)
    assert len(pairs) == 2 * 20
    for chosen, expected in pairs:
        assert torch.equal(chosen, expected)
