"""``mixq sensitivity`` and ``mixq allocate``: table, plan, printed tables, exit codes."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mixq
from mixq.allocation.costs import CostTable
from mixq.cli.main import main
from mixq.data import CIFAR10_CLASSES
from mixq.models import resnet20
from mixq.plan import Plan
from mixq.sensitivity import HutchinsonConfig, SensitivityTable, hutchinson_traces


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet20.th"
    torch.save(resnet20().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def table_path(weights: Path, tmp_path_factory) -> Path:
    model = mixq.models.load_pretrained_cifar_resnet(resnet20(), weights)
    generator = torch.Generator().manual_seed(0)
    batch = (
        torch.randn(4, 3, 32, 32, generator=generator),
        torch.randint(0, 10, (4,), generator=generator),
    )
    config = HutchinsonConfig(min_probes=2, max_probes=2, probe_scope="model")
    table = hutchinson_traces(
        model, [batch], config, model_name="resnet20", weights_path=str(weights), progress=False
    )
    path = tmp_path_factory.mktemp("table") / "sensitivity.json"
    table.save(path)
    return path


def _toy_cifar(root: Path) -> Path:
    """A ``train.tar`` of 16 random 32x32 JPEGs in the CIFAR-10 JPEG layout."""
    root.mkdir(parents=True)
    generator = np.random.default_rng(0)
    with tarfile.open(root / "train.tar", "w") as archive:
        for i in range(16):
            pixels = generator.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG")
            member = tarfile.TarInfo(f"train/{CIFAR10_CLASSES[i % 10]}/{i:04d}.jpg")
            member.size = buffer.tell()
            buffer.seek(0)
            archive.addfile(member, buffer)
    return root


def test_sensitivity_writes_a_table_of_every_layer(weights, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the decoded-image cache goes there
    data = _toy_cifar(tmp_path / "cifar")
    code = main([
        "sensitivity", "--model", "resnet20", "--weights", str(weights),
        "--data-dir", str(data), "--images", "16", "--batch-size", "8",
        "--min-probes", "2", "--max-probes", "2", "--probe-scope", "model", "-q",
        "-o", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    table = SensitivityTable.load(tmp_path / "sensitivity.json")
    assert list(table.layers) == mixq.quantizable_layer_names(resnet20())
    assert table.run.model == "resnet20" and table.run.hvp_count == 2
    assert table.run.weights == str(weights.resolve())
    printed = capsys.readouterr().out
    assert "layer3.2.conv2" in printed and "2 Hessian-vector products" in printed


def test_sensitivity_auto_takes_exact_traces_on_a_relu_resnet(
    weights, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    data = _toy_cifar(tmp_path / "cifar")
    code = main([
        "sensitivity", "--model", "resnet20", "--weights", str(weights), "--method", "auto",
        "--data-dir", str(data), "--images", "8", "--batch-size", "8", "-q",
        "-o", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    table = SensitivityTable.load(tmp_path / "sensitivity.json")
    assert table.run.method == "gauss-newton" and table.run.samples == 8
    assert table.run.hessian_gap is not None and table.run.hessian_gap < 1e-3
    assert all(layer.trace > 0 and layer.trace_stderr == 0 for layer in table.layers.values())
    assert "exact Gauss-Newton traces on 8 samples" in capsys.readouterr().out


def test_sensitivity_bad_settings_exit_with_an_error(weights, tmp_path, capsys) -> None:
    code = main([
        "sensitivity", "--model", "resnet20", "--weights", str(weights), "--tolerance", "0",
        "-o", str(tmp_path),
    ])  # fmt: skip
    assert code == 1 and "tolerance must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "sensitivity.json").exists()


def test_allocate_hawq_writes_a_plan_at_the_budget(table_path, tmp_path, capsys) -> None:
    code = main([
        "allocate", "--table", str(table_path), "--budget", "eq-bits=4.5", "-q",
        "--override", "conv1=fixed-8", "--override", "linear=fixed-8", "-o", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    plan = Plan.load(tmp_path / "plan.json")
    assert plan.method == "hawq-v3-ilp"
    assert str(plan.layers["conv1"].ratio) == str(plan.layers["linear"].ratio) == "fixed-8:1"
    assert 4.0 < plan.metadata["used"]["eq_bits"] <= 4.5
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["layer", "weights", "bits", "omega", "choice"]
    assert printed[1].startswith("conv1") and printed[1].endswith("fixed-8:1")
    assert printed[-1].startswith("hawq-v3-ilp: objective")


def test_allocate_joint_with_a_cost_table_and_ties(table_path, tmp_path) -> None:
    names = list(SensitivityTable.load(table_path).layers)
    candidates = ["fixed-8", "sp2-4:0.5,fixed-4:0.5", "sp2-4:0.6,fixed-4:0.35,fixed-8:0.05"]
    # LUT work: SP2 rows run on LUTs; a made-up per-row cost, large enough to bind.
    lut = CostTable(
        "lut", {n: {"fixed-8": 0.0, candidates[1]: 50.0, candidates[2]: 60.0} for n in names}
    )
    lut.save(tmp_path / "lut.json")
    code = main([
        "allocate", "--table", str(table_path), "--method", "joint-ilp",
        "--candidates", *candidates, "--budget", "eq-bits=5", "--budget", "lut=500",
        "--cost-table", str(tmp_path / "lut.json"), "--tie", "layer1.0.conv1,layer1.1.conv1",
        "-q", "-o", str(tmp_path),
    ])  # fmt: skip
    assert code == 0
    plan = Plan.load(tmp_path / "plan.json")
    assert plan.metadata["used"]["lut"] <= 500 and plan.metadata["used"]["eq_bits"] <= 5
    assert plan.layers["layer1.0.conv1"].ratio == plan.layers["layer1.1.conv1"].ratio
    mixed = [lp for lp in plan.layers.values() if len(lp.ratio.candidates) > 1]
    assert mixed and all(lp.assignment is not None for lp in mixed)
    assert json.loads((tmp_path / "plan.json").read_text())["metadata"]["ties"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--budget", "eq-bits=3"], "smallest budget of each limit alone: eq_bits=4"),
        (["--budget", "eq-bits"], "write NAME=NUMBER"),
        (["--budget", "latency=1"], "no cost table has that name"),
        (["--budget", "eq-bits=8", "--override", "conv1"], "write LAYER=CANDIDATE"),
        (["--budget", "eq-bits=8", "--tie", "conv1,nowhere"], "not in the perturbation table"),
        (["--budget", "eq-bits=inf"], "must be a finite number > 0"),
    ],
)
def test_allocate_bad_inputs_exit_with_the_problem_named(
    table_path, tmp_path, capsys, arguments: list[str], message: str
) -> None:
    code = main(["allocate", "--table", str(table_path), "-q", "-o", str(tmp_path), *arguments])
    assert code == 1 and message in capsys.readouterr().err
    assert not (tmp_path / "plan.json").exists()


def test_allocate_without_a_table_file_fails_cleanly(tmp_path, capsys) -> None:
    code = main([
        "allocate", "--table", str(tmp_path / "absent.json"), "--budget", "eq-bits=4",
        "-o", str(tmp_path),
    ])  # fmt: skip
    assert code == 1 and "sensitivity table not found" in capsys.readouterr().err


def test_allocate_needs_a_budget(table_path, tmp_path, capsys) -> None:
    # Without one, every layer would quietly take its most precise option (all Fixed-8).
    code = main(["allocate", "--table", str(table_path), "-o", str(tmp_path)])
    assert code == 2 and "--budget" in capsys.readouterr().err
    assert not (tmp_path / "plan.json").exists()


def test_allocate_refuses_a_binary_table(tmp_path, capsys) -> None:
    binary = tmp_path / "table.json"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    code = main(["allocate", "--table", str(binary), "--budget", "eq-bits=4", "-o", str(tmp_path)])
    assert code == 1 and "not UTF-8 text" in capsys.readouterr().err
