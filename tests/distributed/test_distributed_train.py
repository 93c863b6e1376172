"""QAT on 2 gloo processes (spawned here): the one-process result on the same global batch,
rank 0 the only writer, and checkpoints that resume under another number of processes."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _spawn import (
    WORLD,
    assert_close_states,
    loader,
    quantized_mlp,
    state,
    written,
)

import mixq.train.loop as loop
from mixq.train import TrainConfig, train

CONFIG = TrainConfig(epochs=2, lr=0.05, warmup_epochs=0.5, momentum=0.9)
FIRST_EPOCH = TrainConfig(**{**CONFIG.to_dict(), "epochs": 1})
PER_RANK_BATCH = 4  # two ranks of 4: the global batch of 8 one process takes


def _record_writes(rank: int, log: Path) -> None:
    """Wrap the loop's writers so that each call leaves a line naming the rank."""
    for name in ("_save", "_append_metrics", "_rewrite_metrics"):
        original = getattr(loop, name)

        def wrapped(*args: object, _original=original, _name=name, **kwargs: object) -> None:
            with log.open("a") as handle:
                handle.write(f"{rank} {_name}\n")
            _original(*args, **kwargs)

        setattr(loop, name, wrapped)


def _rank_trains(rank: int, init_file: str, tmp: str) -> None:
    torch.set_num_threads(1)
    folder = Path(tmp)
    first, resumed = quantized_mlp(), quantized_mlp()  # before the group: calibrated alone
    _record_writes(rank, folder / "writes.txt")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        # One epoch (two steps of the global batch of 8) from scratch, checkpointed.
        train(first, loader(PER_RANK_BATCH), FIRST_EPOCH, output_dir=folder / "two", progress=False)
        torch.save(state(first), folder / f"first.{rank}.pt")
        # Resume a one-process checkpoint for the second epoch.
        result = train(
            resumed,
            loader(PER_RANK_BATCH),
            CONFIG,
            output_dir=folder / "one_then_two",
            resume=True,
            progress=False,
        )
        assert [r.epoch for r in result.history] == [1, 2]
        torch.save(state(resumed), folder / f"resumed.{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_train_resume_and_write_as_one(tmp_path: Path) -> None:
    # One process: the first epoch on batches of 8, then the second resumed from it.
    single = quantized_mlp()
    train(single, loader(8), FIRST_EPOCH, output_dir=tmp_path / "one", progress=False)
    after_first = state(single)
    shutil.copytree(tmp_path / "one", tmp_path / "one_then_two")
    train(single, loader(8), CONFIG, output_dir=tmp_path / "one", resume=True, progress=False)
    after_second = state(single)

    mp.spawn(_rank_trains, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD)

    for rank in range(WORLD):  # the same parameters as one process, on every rank
        got = torch.load(tmp_path / f"first.{rank}.pt", weights_only=True)
        assert_close_states(got, after_first, f"rank {rank}, first epoch")
        got = torch.load(tmp_path / f"resumed.{rank}.pt", weights_only=True)
        assert_close_states(got, after_second, f"rank {rank}, resumed from 1 process")

    # Only rank 0 wrote, and left nothing half-written.
    writers = {line.split()[0] for line in (tmp_path / "writes.txt").read_text().splitlines()}
    assert writers == {"0"}
    assert written(tmp_path / "two") == ["checkpoint.pt", "metrics.jsonl"]
    checkpoint = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    assert checkpoint["processes"] == WORLD and checkpoint["steps_per_epoch"] == 2
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 1

    # The two-process checkpoint resumes in one process (batch 8) as the one-process run.
    resumed = quantized_mlp()
    result = train(
        resumed, loader(8), CONFIG, output_dir=tmp_path / "two", resume=True, progress=False
    )
    assert [r.epoch for r in result.history] == [1, 2]
    assert_close_states(state(resumed), after_second, "two processes, then one")


def test_resume_with_another_step_count_continues_the_schedule_at_the_epoch(
    tmp_path: Path,
) -> None:
    """A checkpoint of 2 steps an epoch (2 processes of 4, or one of 8) resumed at 4 steps
    an epoch (one process of 4): the schedule stands at epoch 1 of 2, not at step 2 of 8."""
    train(quantized_mlp(), loader(8), FIRST_EPOCH, output_dir=tmp_path, progress=False)
    result = train(
        quantized_mlp(), loader(4), CONFIG, output_dir=tmp_path, resume=True, progress=False
    )
    assert [r.epoch for r in result.history] == [1, 2]
    # 4 steps an epoch: after 8 of 8 steps the cosine is at 0. Had the saved step count
    # been kept, the run would end at step 2 + 4 = 6 of 8 with the rate still above 0.
    assert result.history[-1].lr == 0.0
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["scheduler"]["last_epoch"] == 8 and checkpoint["steps_per_epoch"] == 4
