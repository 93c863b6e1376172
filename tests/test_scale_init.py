"""Per-row clip initialisation: max |w| and the MSE search."""

from __future__ import annotations

import pytest
import torch

from mixq.fakequant import MIN_SCALE
from mixq.scale_init import (
    _MSE_FRACTIONS,
    _mse_scale_all,
    init_scale,
    max_abs_scale,
    mse_scale,
    mse_scales_and_errors,
    row_squared_error,
)
from mixq.schemes import Candidate


def test_max_abs_scale() -> None:
    w = torch.tensor([[0.5, -2.0, 1.0], [0.0, 0.0, 0.0], [3.0, 0.1, -0.2]])
    torch.testing.assert_close(max_abs_scale(w), torch.tensor([2.0, MIN_SCALE, 3.0]))


def test_row_squared_error_by_hand() -> None:
    w = torch.tensor([[0.9, -0.2, 0.05], [2.0, 1.1, -0.6]])
    # fixed-3 levels of alpha 1 and 2: (1, -1/3, 0) and (2, 4/3, -2/3).
    expected = torch.tensor(
        [0.1**2 + (1 / 3 - 0.2) ** 2 + 0.05**2, 0.0 + (4 / 3 - 1.1) ** 2 + (2 / 3 - 0.6) ** 2]
    )
    got = row_squared_error(w, torch.tensor([1.0, 2.0]), Candidate.parse("fixed-3"))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("name", ["fixed-2", "fixed-4", "sp2-4", "pot-4", "fixed-8"])
def test_mse_scale_is_the_best_fraction_of_the_peak(name: str) -> None:
    candidate = Candidate.parse(name)
    w = torch.randn(6, 40, generator=torch.Generator().manual_seed(1))
    w[0] = torch.linspace(-1, 1, 40)  # a flat row
    alpha = mse_scale(w, candidate)
    peak = max_abs_scale(w)
    errors = torch.stack(
        [row_squared_error(w, peak * f, candidate) for f in _MSE_FRACTIONS]
    )  # (fractions, rows)
    chosen = row_squared_error(w, alpha, candidate)
    torch.testing.assert_close(chosen, errors.min(dim=0).values)
    assert bool((chosen <= row_squared_error(w, peak, candidate)).all())
    assert bool((alpha <= peak).all()) and bool((alpha >= 0.2 * peak * (1 - 1e-6)).all())


def test_mse_scale_clips_an_outlier_on_a_coarse_grid() -> None:
    w = torch.tensor([[1.0, 0.3, 0.3, 0.3, 0.3, -0.3, 0.3, 0.3]])
    # The optimum of 7 (a - 0.3)^2 + (1 - a)^2 is a = 0.3875; the 1% grid gives 0.39.
    assert float(mse_scale(w, Candidate.parse("fixed-2"))) == pytest.approx(0.39, abs=1e-6)
    assert float(init_scale(w, Candidate.parse("fixed-2"), "max")) == 1.0


def test_zero_rows_get_the_minimum_scale() -> None:
    w = torch.zeros(2, 5)
    for method in ("max", "mse"):
        alpha = init_scale(w, Candidate.parse("sp2-4"), method)  # type: ignore[arg-type]
        assert torch.equal(alpha, torch.full((2,), MIN_SCALE))


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown scale initialisation 'median'"):
        init_scale(torch.ones(1, 2), Candidate.parse("fixed-4"), "median")  # type: ignore[arg-type]


def _varied_weights() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    heavy = torch.randn(48, 300, generator=g).pow(3)  # outliers: clipping pays
    pruned = torch.randn(20, 128, generator=g) * 0.05
    pruned[::3] = 0.0  # all-zero rows: every clip ties, the peak wins
    pruned[1, ::2] = 0.0
    on_grid = torch.randint(-7, 8, (16, 96), generator=g).float() / 7  # exact fixed-4 values
    tied = torch.full((8, 64), 0.25)
    return [
        torch.randn(96, 1536, generator=g) * 0.02,  # a transformer block's row length
        torch.randn(30, 576, generator=g) * 0.1,
        heavy,
        pruned,
        on_grid,
        tied,
        torch.randn(1, 200, generator=g),  # one row: the full search
        torch.randn(12, 9, generator=g),  # short rows: the full search
        torch.randn(40, 64, generator=g) * 1e-7,  # tiny clips: no screening
    ]


@pytest.mark.parametrize(
    ("name", "threads"),
    [
        ("fixed-2", 1),
        ("fixed-4", 1),
        ("sp2-4", 1),
        ("pot-4", 1),
        ("pot-8", 1),
        ("fixed-8", 1),
        ("sp2-4", 2),
    ],
)
def test_screened_search_equals_the_full_search_bitwise(name: str, threads: int) -> None:
    candidate = Candidate.parse(name)
    torch.set_num_threads(threads)
    # Two threads split sums of 2^15 values or more: one such matrix is enough there.
    weights = _varied_weights() if threads == 1 else [torch.randn(64, 1024) * 0.05]
    try:
        for w in weights:
            expected = _mse_scale_all(w, candidate)
            alpha, error = mse_scales_and_errors(w, [candidate])[candidate]
            assert torch.equal(alpha, expected), w.shape
            assert torch.equal(error, row_squared_error(w, expected, candidate)), w.shape
    finally:
        torch.set_num_threads(1)


def test_screened_search_on_pretrained_resnet20(shared_data) -> None:
    from mixq.models import load_pretrained_cifar_resnet, resnet20

    path = shared_data / "resnet-cifar10" / "resnet20-12fca82f.th"
    model = load_pretrained_cifar_resnet(resnet20(), path)
    layers = [p.detach().flatten(1) for p in model.parameters() if p.dim() > 1]
    assert len(layers) == 20
    candidates = [Candidate.parse(name) for name in ("sp2-4", "fixed-4", "fixed-8")]
    for w in layers:
        for candidate, (alpha, error) in mse_scales_and_errors(w, candidates).items():
            assert torch.equal(alpha, _mse_scale_all(w, candidate))
            assert torch.equal(error, row_squared_error(w, alpha, candidate))
