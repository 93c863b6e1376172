"""Training refuses nonsense options, stops on divergence without saving, checks labels,
and extends a finished run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import mixq
from mixq.data import EpochShuffleSampler
from mixq.errors import DataError, NonFiniteWeightError, TrainConfigError, TrainingDivergedError
from mixq.train import TrainConfig, train
from mixq.train.guard import require_finite_model


def _problem() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long()  # 3 classes


def _loader(x: torch.Tensor, y: torch.Tensor) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(
        dataset, batch_size=32, sampler=EpochShuffleSampler(len(dataset), seed=1)
    )


def _net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, _ = _problem()
    return mixq.quantize(
        net, mixq.Recipe.preset("fixed8", first_last=None), calibration_data=[x], progress=False
    )


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"epochs": 1.5}, "epochs must be an integer"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"epochs": True}, "epochs must be an integer"),
        ({"lr": math.inf}, "lr must be finite"),
        ({"lr": math.nan}, "lr must be finite"),
        ({"lr": -0.1}, "lr must be > 0"),
        ({"lr": "0.1"}, "lr must be a number"),
        ({"weight_decay": -1}, "weight_decay must be >= 0"),
        ({"freeze_bn_epoch": -5}, "freeze_bn_epoch must be >= 0"),
        ({"freeze_bn_epoch": 1.0}, "freeze_bn_epoch must be an integer"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"grad_clip": math.inf}, "grad_clip must be finite"),
        ({"grad_clip": -1.0}, "grad_clip must be > 0"),
        ({"momentum": -0.1}, "momentum must be >= 0"),
        ({"weight_decay": math.nan}, "weight_decay must be finite"),
        ({"distill_weight": -math.inf}, "distill_weight must be finite"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"warmup_epochs": -1}, "warmup_epochs must be >= 0"),
        ({"bn_batch_stats": "yes"}, "bn_batch_stats must be true or false"),
        ({"optimizer": "adam"}, "unknown optimizer 'adam'"),
        ({"task_weight": 0.0}, "no loss"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_bad_options_are_refused_when_the_config_is_built(
    options: dict[str, object], field: str
) -> None:
    with pytest.raises(TrainConfigError, match=field):
        TrainConfig(**options)  # type: ignore[arg-type]
    with pytest.raises(TrainConfigError, match=field):
        TrainConfig.from_dict(options)


def test_train_config_error_is_exported_from_errors_and_mixq() -> None:
    assert mixq.TrainConfigError is TrainConfigError
    assert issubclass(TrainConfigError, mixq.MixqError)


def test_a_diverging_run_stops_with_its_step_and_saves_nothing(tmp_path: Path) -> None:
    x, y = _problem()
    config = TrainConfig(epochs=2, lr=1e30)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step \d") as caught:
        train(_net(), _loader(x, y), config, output_dir=tmp_path, progress=False)
    assert caught.value.epoch == 1 and caught.value.step <= 2
    assert not (tmp_path / "checkpoint.pt").exists()
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_non_finite_model_is_never_saved() -> None:
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight[0, 0] = math.nan
    with pytest.raises(NonFiniteWeightError, match=r"not saving out.pt: weight holds NaN"):
        require_finite_model(net, "out.pt")
    require_finite_model(nn.Linear(2, 2), "out.pt")  # a finite model passes


def test_out_of_range_labels_are_a_data_error_before_any_update() -> None:
    x, _ = _problem()
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items() if torch.is_tensor(v)}
    with pytest.raises(DataError, match=r"epoch 1, step 1: label 7 is outside 0\.\.2"):
        train(net, [(x[:8], torch.full((8,), 7))], TrainConfig(epochs=1), progress=False)
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    with pytest.raises(DataError, match="holds label -3"):
        labels = torch.zeros(128, dtype=torch.long)
        labels[5] = -3
        train(_net(), _loader(x, labels), TrainConfig(epochs=1), progress=False)


def test_a_finished_run_can_be_extended_with_more_epochs(tmp_path: Path) -> None:
    x, y = _problem()
    net = _net()
    train(net, _loader(x, y), TrainConfig(epochs=1, lr=0.05), output_dir=tmp_path, progress=False)
    after_one = {k: v.clone() for k, v in net.state_dict().items() if torch.is_tensor(v)}
    extended = train(
        _net(),
        _loader(x, y),
        TrainConfig(epochs=3, lr=0.05),
        output_dir=tmp_path,
        resume=True,
        progress=False,
    )
    assert [r.epoch for r in extended.history] == [1, 2, 3]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["config"]["epochs"] == 3
    assert any(not torch.equal(state["model"][k], v) for k, v in after_one.items())
    with pytest.raises(TrainConfigError, match="already trained 3 epochs"):
        train(
            _net(),
            _loader(x, y),
            TrainConfig(epochs=2, lr=0.05),
            output_dir=tmp_path,
            resume=True,
            progress=False,
        )
