"""Hutchinson traces against the exact Hessian of a tiny network, stopping, and bad inputs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mixq
from mixq.errors import SensitivityError
from mixq.sensitivity import HutchinsonConfig, hutchinson_traces

# With seed 0 and 300 probes per layer on one fixed batch, every layer trace of the tiny
# network below lands within LAYER_TOLERANCE (relative) of the exact trace, and every row
# trace within ROW_TOLERANCE of the largest exact row trace of its layer. (Measured: at
# most 6.1% and 12.1%; the relative standard errors are 2.7% to 9.1%.)
LAYER_TOLERANCE = 0.10
ROW_TOLERANCE = 0.15
PROBES = 300


def _tiny_network() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3),
        nn.BatchNorm2d(3),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 4),
    )
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.3, 3.0)
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-0.5, 0.5)
    return net.eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 2, 5, 5, generator=generator), torch.randint(
        0, 4, (16,), generator=generator
    )


def _exact_folded_traces(net: nn.Sequential) -> dict[str, np.ndarray]:
    """Row traces of the exact Hessian w.r.t. (folded conv weight, linear weight), formed
    with torch.autograd.functional.hessian, independently of mixq's folding code."""
    conv, bn, linear = net[0], net[1], net[4]
    gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded_w = (conv.weight * gain.view(-1, 1, 1, 1)).detach()
    folded_b = (bn.bias + (conv.bias - bn.running_mean) * gain).detach()
    x, y = _batch()
    sizes = (folded_w.numel(), linear.weight.numel())

    def loss(flat: torch.Tensor) -> torch.Tensor:
        w_conv = flat[: sizes[0]].view_as(folded_w)
        w_lin = flat[sizes[0] :].view_as(linear.weight)
        hidden = torch.tanh(F.conv2d(x, w_conv, folded_b)).flatten(1)
        return F.cross_entropy(F.linear(hidden, w_lin, linear.bias.detach()), y)

    flat = torch.cat([folded_w.flatten(), linear.weight.detach().flatten()]).double()
    hessian = torch.autograd.functional.hessian(lambda f: loss(f.float()).double(), flat)
    diagonal = torch.diagonal(hessian).numpy()
    return {
        "0": diagonal[: sizes[0]].reshape(3, -1).sum(axis=1),
        "4": diagonal[sizes[0] :].reshape(4, -1).sum(axis=1),
    }


@pytest.mark.parametrize("scope", ["layer", "model"])
def test_traces_match_the_exact_hessian_of_a_tiny_network(scope: str) -> None:
    net = _tiny_network()
    exact = _exact_folded_traces(net)
    config = HutchinsonConfig(
        tolerance=1e-9, min_probes=PROBES, max_probes=PROBES, probe_scope=scope
    )
    table = hutchinson_traces(net, [_batch()], config, progress=False)
    assert list(table.layers) == ["0", "4"]
    for name, rows in exact.items():
        layer = table.layer(name)
        assert layer.trace == pytest.approx(rows.sum(), rel=LAYER_TOLERANCE)
        assert np.max(np.abs(layer.row_traces - rows)) <= ROW_TOLERANCE * np.abs(rows).max()
        # The exact value lies within three standard errors of the estimate.
        assert abs(layer.trace - rows.sum()) <= 3 * layer.trace_stderr
        assert layer.probes == PROBES
    assert table.run.hvp_count == (2 * PROBES if scope == "layer" else PROBES)
    assert not table.run.converged


def test_double_backprop_gives_the_same_products_as_jvp_of_grad() -> None:
    net = _tiny_network()
    config = HutchinsonConfig(tolerance=1e-9, min_probes=5, max_probes=5)
    forward = hutchinson_traces(net, [_batch()], config, progress=False)
    reverse = hutchinson_traces(
        net, [_batch()], replace(config, hvp_mode="reverse-over-reverse"), progress=False
    )
    for name in forward.layers:
        np.testing.assert_allclose(
            reverse.layer(name).row_traces, forward.layer(name).row_traces, rtol=1e-5, atol=1e-7
        )


def test_a_diagonal_hessian_is_exact_with_any_probe_and_stops_at_min_probes() -> None:
    # loss = sum((W x)^2) with x = 3 e_0: H is diagonal, 18 on column 0 of every row.
    net = nn.Linear(3, 2, bias=False)
    x = torch.tensor([[3.0, 0.0, 0.0]])
    config = HutchinsonConfig(tolerance=0.01, min_probes=3, max_probes=50)
    table = hutchinson_traces(
        net, [(x, torch.zeros(1))], config, loss_fn=lambda out, _: out.pow(2).sum(), progress=False
    )
    layer = table.layer("")
    assert layer.row_traces.tolist() == [18.0, 18.0]
    assert layer.trace == 36.0 and layer.trace_stderr == 0.0
    assert layer.probes == 3 and table.run.converged and table.run.loss == "<lambda>"


def test_probing_stops_at_the_cap_and_counts_products() -> None:
    net = _tiny_network()
    config = HutchinsonConfig(tolerance=1e-6, min_probes=2, max_probes=5, batches_per_probe=2)
    table = hutchinson_traces(net, [_batch()], config, progress=False)
    assert table.run.probes == 5 and not table.run.converged
    assert table.run.hvp_count == 2 * 5 * 2  # layers x probes x batches per probe
    assert table.run.samples == table.run.hvp_count * 16
    assert table.run.max_rel_stderr > 1e-6


def test_stop_on_change_stops_once_the_mean_settles() -> None:
    net = _tiny_network()
    config = HutchinsonConfig(tolerance=0.2, stop_on="change", min_probes=2, max_probes=400)
    table = hutchinson_traces(net, [_batch()], config, progress=False)
    assert table.run.converged and table.run.probes < 400


def test_without_folding_traces_are_wrt_the_raw_conv_weight() -> None:
    # The Hessian w.r.t. W is the one w.r.t. W * gain with rows scaled by gain_r^2.
    net = _tiny_network()
    bn = net[1]
    gain = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
    exact = _exact_folded_traces(net)["0"] * gain**2
    config = HutchinsonConfig(tolerance=1e-9, min_probes=PROBES, max_probes=PROBES, fold_bn=False)
    table = hutchinson_traces(net, [_batch()], config, layers=["0"], progress=False)
    assert table.layer("0").trace == pytest.approx(exact.sum(), rel=LAYER_TOLERANCE)
    assert not table.run.config.fold_bn


def test_a_quantised_model_is_measured_as_its_float_effective_weights() -> None:
    net = _tiny_network()
    qnet = mixq.quantize(net, "fixed8", progress=False)  # uncalibrated: its inputs stay float
    config = HutchinsonConfig(tolerance=1e-9, min_probes=4, max_probes=4)
    from_float = hutchinson_traces(net, [_batch()], config, progress=False)
    from_quantised = hutchinson_traces(qnet, [_batch()], config, progress=False)
    for name, layer in from_float.layers.items():
        np.testing.assert_allclose(
            from_quantised.layer(name).row_traces, layer.row_traces, rtol=1e-5
        )


def test_a_one_shot_generator_that_runs_out_is_named() -> None:
    net = _tiny_network()
    batches = (b for b in [_batch()])
    with pytest.raises(SensitivityError, match="ran out after 1 batches"):
        hutchinson_traces(
            net, batches, HutchinsonConfig(min_probes=2, max_probes=3), progress=False
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "no batches"),
        ([torch.randn(2, 2, 5, 5)], "pair of tensors"),
    ],
)
def test_bad_data_raises(data, message: str) -> None:
    with pytest.raises(SensitivityError, match=message):
        hutchinson_traces(_tiny_network(), data, progress=False)


def test_unknown_layers_are_named() -> None:
    with pytest.raises(SensitivityError, match=r"\['9'\]"):
        hutchinson_traces(_tiny_network(), [_batch()], layers=["9"], progress=False)


@pytest.mark.parametrize(
    "settings",
    [
        {"tolerance": 0.0},
        {"stop_on": "never"},
        {"min_probes": 1},
        {"min_probes": 10, "max_probes": 5},
        {"batches_per_probe": 0},
        {"probe_scope": "row"},
        {"hvp_mode": "finite-differences"},
    ],
)
def test_bad_settings_raise(settings: dict) -> None:
    with pytest.raises(SensitivityError):
        HutchinsonConfig(**settings)
