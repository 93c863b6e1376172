"""The QAT loop: it learns, it resumes bit for bit, it distils, it refuses bad setups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import mixq
from mixq.data import EpochShuffleSampler
from mixq.errors import CheckpointError
from mixq.train import TrainConfig, TrainConfigError, train


def _problem(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()  # 3 classes
    return x, y


def _loader(x: torch.Tensor, y: torch.Tensor, batch: int = 32) -> torch.utils.data.DataLoader:
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=EpochShuffleSampler(len(dataset), seed=3)
    )


def _quantized_mlp() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))
    x, _ = _problem()
    return mixq.quantize(
        net,
        mixq.Recipe.preset("rmsmp", first_last=None, act_bits=4),
        calibration_data=[x[:64]],
        progress=False,
    )


def _eval_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(x), y))


def test_qat_lowers_the_loss_of_a_quantised_model() -> None:
    x, y = _problem()
    model = _quantized_mlp()
    before = _eval_loss(model, x, y)
    config = TrainConfig(epochs=8, lr=0.1, warmup_epochs=0.5, grad_clip=5.0)
    result = train(model, _loader(x, y), config, progress=False)
    after = _eval_loss(model, x, y)
    assert after < 0.6 * before, (before, after)
    assert [r.epoch for r in result.history] == list(range(1, 9))
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_resume_after_an_interrupt_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    x, y = _problem()
    config = TrainConfig(epochs=3, lr=0.05, warmup_epochs=0.5, optimizer="adamw")
    straight = _quantized_mlp()
    train(straight, _loader(x, y), config, output_dir=tmp_path / "a", progress=False)

    interrupted = _quantized_mlp()
    short = TrainConfig(**{**config.to_dict()})
    # Stop after epoch 2 by raising from the evaluation hook, as a kill would.
    calls = {"n": 0}

    def stop_after_two(_: nn.Module) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        train(
            interrupted,
            _loader(x, y),
            short,
            evaluate=stop_after_two,
            output_dir=tmp_path / "b",
            progress=False,
        )
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]

    resumed = _quantized_mlp()
    result = train(
        resumed, _loader(x, y), config, output_dir=tmp_path / "b", resume=True, progress=False
    )
    assert [r.epoch for r in result.history] == [1, 2, 3]
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        if torch.is_tensor(a):
            assert torch.equal(a, b), name


def test_resume_refuses_a_different_configuration(tmp_path: Path) -> None:
    x, y = _problem()
    train(
        _quantized_mlp(),
        _loader(x, y),
        TrainConfig(epochs=1, lr=0.05),
        output_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(TrainConfigError, match="lr"):
        train(
            _quantized_mlp(),
            _loader(x, y),
            TrainConfig(epochs=2, lr=0.01),
            output_dir=tmp_path,
            resume=True,
            progress=False,
        )


def test_resume_refuses_a_corrupt_checkpoint(tmp_path: Path) -> None:
    x, y = _problem()
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot resume"):
        train(
            _quantized_mlp(),
            _loader(x, y),
            TrainConfig(epochs=1),
            output_dir=tmp_path,
            resume=True,
            progress=False,
        )


def test_logit_distillation_moves_the_student_towards_the_teacher() -> None:
    x, _ = _problem()
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    student = mixq.quantize(
        teacher,
        mixq.Recipe.preset("sp2-4", first_last=None),
        calibration_data=[x[:64]],
        progress=False,
    )
    with torch.no_grad():
        student[2].weight.mul_(0.2)  # push the student away from the teacher

    def gap() -> float:  # KL(teacher || student) of the softened distributions
        with torch.no_grad():
            t, s = teacher(x) / 2.0, student(x) / 2.0
            return float(
                nn.functional.kl_div(
                    s.log_softmax(-1), t.log_softmax(-1), reduction="batchmean", log_target=True
                )
            )

    before = gap()
    config = TrainConfig(
        epochs=6, lr=0.05, distill="logits", task_weight=0.0, temperature=2.0, weight_decay=0.0
    )
    train(
        student,
        [(x[i : i + 32],) for i in range(0, 256, 32)],
        config,
        teacher=teacher,
        progress=False,
    )
    assert gap() < 0.5 * before


def test_bad_setups_are_refused() -> None:
    with pytest.raises(TrainConfigError, match="teacher"):
        train(
            _quantized_mlp(),
            [(torch.randn(4, 8), torch.zeros(4).long())],
            TrainConfig(distill="logits"),
            progress=False,
        )
    with pytest.raises(TrainConfigError, match="empty"):
        train(_quantized_mlp(), [], TrainConfig(), progress=False)
    with pytest.raises(TrainConfigError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(TrainConfigError, match="unknown training option"):
        TrainConfig.from_dict({"epochs": 1, "learning_rate": 0.1})


def test_unfrozen_bn_trains_on_batch_statistics_until_frozen() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 2)
    )
    images = torch.randn(64, 3, 8, 8) * 3 + 1
    labels = (images.mean(dim=(1, 2, 3)) > 1).long()
    model = mixq.quantize(net, "fixed8", calibration_data=[images], progress=False)
    bn = model[0].bn
    batches = [(images[i : i + 16], labels[i : i + 16]) for i in range(0, 64, 16)]
    config = TrainConfig(epochs=2, lr=0.01, bn_batch_stats=True, freeze_bn_epoch=1)
    seen: list[int] = []
    train(
        model,
        batches,
        config,
        evaluate=lambda m: seen.append(int(bn.num_batches_tracked)) or {},
        progress=False,
    )
    assert seen == [4, 4]  # epoch 1 updated the statistics 4 times, epoch 2 not at all
    assert model[0].bn_frozen


def test_the_epoch_log_shows_metrics_only_when_there_are_some(
    caplog: pytest.LogCaptureFixture,
) -> None:
    x, y = _problem()
    config = TrainConfig(epochs=1, lr=0.05)
    with caplog.at_level("INFO", logger="mixq.train"):
        plain = train(_quantized_mlp(), _loader(x, y), config, progress=False)
        scored = train(
            _quantized_mlp(),
            _loader(x, y),
            config,
            evaluate=lambda _: {"top1": 0.8125},
            progress=False,
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "mixq.train"]
    assert lines == [
        f"epoch 1/1 loss {plain.history[0].train_loss:.4f}",
        f"epoch 1/1 loss {scored.history[0].train_loss:.4f} top1 0.8125",
    ]
