"""SensitivityTable: JSON round trip, atomic writes, and bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _tables import made_up_table
from torch import nn

from mixq.errors import SensitivityError
from mixq.sensitivity import HutchinsonConfig, SensitivityTable, hutchinson_traces


def _measured_table() -> SensitivityTable:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    ).eval()
    batch = (torch.randn(8, 2, 6, 6), torch.randint(0, 3, (8,)))
    config = HutchinsonConfig(min_probes=3, max_probes=3)
    return hutchinson_traces(net, [batch], config, model_name="toy", progress=False)


def test_a_measured_table_round_trips_through_json_exactly(tmp_path) -> None:
    table = _measured_table()
    path = tmp_path / "sub" / "sensitivity.json"
    table.save(path)
    again = SensitivityTable.load(path)
    assert again == table
    assert again.run.model == "toy" and again.run.config.max_probes == 3
    assert again.layer("4").shape == table.layer("4").shape
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary file left
    assert json.loads(path.read_text())["format"] == "mixq.sensitivity-table"


def test_row_traces_sum_to_the_layer_trace_and_means_divide_by_weights() -> None:
    table = _measured_table()
    for layer in table.layers.values():
        assert layer.row_traces.sum() == pytest.approx(layer.trace, rel=1e-9, abs=1e-12)
        assert layer.mean_trace == pytest.approx(layer.trace / layer.shape.weights)
        np.testing.assert_allclose(
            layer.row_mean_traces, layer.row_traces / layer.shape.macs_per_row
        )
    lines = table.format_rows()
    assert len(lines) == 3 and lines[1].startswith("0 ")


def test_a_missing_layer_is_named_with_what_the_table_holds() -> None:
    table = made_up_table(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)), torch.randn(1, 3))
    with pytest.raises(SensitivityError, match=r"no layer 'fc'; it holds: 0, 1$"):
        table.layer("fc")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other"}', "not a sensitivity table"),
        ('{"format": "mixq.sensitivity-table", "layers": {}}', "malformed"),
    ],
)
def test_bad_files_raise(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(SensitivityError, match=message):
        SensitivityTable.load(path)


def test_missing_file_and_wrong_version_raise(tmp_path) -> None:
    with pytest.raises(SensitivityError, match="not found"):
        SensitivityTable.load(tmp_path / "absent.json")
    data = _measured_table().to_dict()
    data["version"] = 99
    with pytest.raises(SensitivityError, match="version 99"):
        SensitivityTable.from_dict(data)


def test_row_arrays_must_match_the_layer_rows() -> None:
    table = _measured_table()
    data = table.to_dict()
    data["layers"]["4"]["row_traces"] = [1.0]
    with pytest.raises(SensitivityError, match="row_traces has 1 entries"):
        SensitivityTable.from_dict(data)
