"""Exact traces from per-sample Jacobians against the full Hessian, computed densely."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev

from mixq.errors import SensitivityError
from mixq.sensitivity import SensitivityTable, gauss_newton_traces
from mixq.sensitivity.folded import folded_float_copy
from mixq.sensitivity.gauss_newton import GAP_WARNING


class ResidualNet(nn.Module):
    """Conv, folded BN, ReLU, a residual sum, pooling, a linear head: piecewise linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(h + self.conv2(h))
        return self.fc(self.pool(h).flatten(1))


class SmoothNet(nn.Module):
    """tanh between two linear layers: curved in the first layer's weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 5)
        self.fc2 = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def _data(shape: tuple[int, ...], batches: int = 1, size: int = 6) -> list:
    generator = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(size, *shape, generator=generator, dtype=torch.float64),
            torch.randint(0, 4, (size,), generator=generator),
        )
        for _ in range(batches)
    ]


def _residual_net() -> nn.Module:
    torch.manual_seed(0)
    net = ResidualNet().double().eval()
    with torch.no_grad():  # BN statistics that are not the identity, so the fold matters
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 2.0)
        net.bn1.weight.uniform_(0.5, 1.5)
    return net


def _dense_row_traces(model: nn.Module, layer: str, data: list) -> torch.Tensor:
    """Each row's Hessian diagonal sum, from the full Hessian of the mean loss over all
    samples of ``data`` with respect to ``layer``'s weight."""
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])
    key = f"{layer}.weight"
    weight = model.get_submodule(layer).weight.detach()

    def loss(w: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, {key: w}, (x,)), y)

    full = hessian(loss)(weight).reshape(weight.numel(), weight.numel())
    return full.detach().diagonal().reshape(weight.shape[0], -1).sum(1)


def test_traces_equal_the_dense_hessian_diagonal_of_a_piecewise_linear_net() -> None:
    net = _residual_net()
    data = _data((2, 5, 5), batches=2)
    table = gauss_newton_traces(net, data, progress=False)
    folded = folded_float_copy(net)
    for layer in ("conv1", "conv2", "fc"):
        want = _dense_row_traces(folded, layer, data)
        got = torch.tensor(table.layer(layer).row_traces)
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12), layer
        assert table.layer(layer).trace == pytest.approx(float(want.sum()), rel=1e-9)
        assert table.layer(layer).trace_stderr == 0.0
    assert table.run.method == "gauss-newton"
    assert table.run.hessian_gap is not None and table.run.hessian_gap < 1e-9
    assert table.run.samples == 12


def test_a_small_memory_bound_splits_into_single_samples_with_the_same_result() -> None:
    net = _residual_net()
    data = _data((2, 5, 5))
    whole = gauss_newton_traces(net, data, progress=False)
    one_by_one = gauss_newton_traces(net, data, memory_mb=1e-6, progress=False)
    for name, layer in whole.layers.items():
        assert torch.allclose(
            torch.tensor(one_by_one.layer(name).row_traces),
            torch.tensor(layer.row_traces),
            rtol=1e-12,
        )


def test_a_curved_net_gives_its_gauss_newton_trace_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    net = SmoothNet().double()
    data = _data((3,), size=8)
    with caplog.at_level(logging.WARNING, logger="mixq"):
        table = gauss_newton_traces(net, data, layers=["fc1"], progress=False)
    assert table.run.hessian_gap is not None and table.run.hessian_gap > GAP_WARNING
    assert "Gauss-Newton" in caplog.text
    x = data[0][0]
    weight = net.fc1.weight.detach()

    def outputs(w: torch.Tensor) -> torch.Tensor:
        return functional_call(net, {"fc1.weight": w}, (x,))

    jac = jacrev(outputs)(weight).reshape(8, 4, -1)  # (samples, classes, weights)
    p = outputs(weight).softmax(-1).detach()
    h_z = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    gauss_newton = torch.einsum("ncw,ncd,ndw->w", jac, h_z, jac) / 8
    want = gauss_newton.reshape(5, 3).sum(1)
    assert torch.allclose(torch.tensor(table.layer("fc1").row_traces), want, rtol=1e-9)
    dense = _dense_row_traces(net, "fc1", data)
    assert not torch.allclose(want, dense, rtol=1e-3)  # the Hessian's own differs here


def test_the_table_keeps_its_method_through_json(tmp_path: Path) -> None:
    table = gauss_newton_traces(_residual_net(), _data((2, 5, 5)), progress=False)
    path = tmp_path / "table.json"
    table.save(path)
    loaded = SensitivityTable.load(path)
    assert loaded == table
    assert loaded.run.method == "gauss-newton"
    old = table.to_dict()
    del old["run"]["method"], old["run"]["hessian_gap"]  # a table written before the field
    assert SensitivityTable.from_dict(old).run.method == "hutchinson"


def test_a_summed_loss_is_refused() -> None:
    def summed(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y, reduction="sum")

    with pytest.raises(SensitivityError, match="mean of per-sample losses"):
        gauss_newton_traces(_residual_net(), _data((2, 5, 5)), loss_fn=summed, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "data", "message"),
    [
        ({"memory_mb": 0.0}, None, "memory_mb"),
        ({"max_batches": 0}, None, "max_batches"),
        ({"layers": ["nope"]}, None, "no Conv2d/Linear layer named"),
        ({"layers": []}, None, "an empty list was given"),
        ({}, [], "no batch"),
        ({}, [torch.zeros(2, 2, 5, 5)], r"\(inputs, targets\) pair"),
    ],
)
def test_bad_settings_and_data_are_refused(kwargs: dict, data: list | None, message: str) -> None:
    data = _data((2, 5, 5)) if data is None else data
    with pytest.raises(SensitivityError, match=message):
        gauss_newton_traces(_residual_net(), data, progress=False, **kwargs)
