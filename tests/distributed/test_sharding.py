"""Sharding a loader and reading torchrun's environment, without starting processes."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

from mixq.data import EpochShuffleSampler, set_epoch
from mixq.distributed_env import Ranks, launched_ranks, process_group, rank_device, rank_share
from mixq.errors import DistributedSetupError
from mixq.train.sharding import shard_loader


def _labels_of(loader: DataLoader) -> list[list[int]]:
    return [batch[1].tolist() for batch in loader]


def _dataset(size: int) -> TensorDataset:
    return TensorDataset(torch.zeros(size, 1), torch.arange(size))


def test_the_ranks_steps_together_are_the_one_process_batches() -> None:
    dataset = _dataset(16)

    def loader(batch: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch, sampler=EpochShuffleSampler(16, seed=5))

    for epoch in (0, 3):
        whole = loader(8)
        set_epoch(whole, epoch)
        shards = [shard_loader(loader(4), rank=r, world=2) for r in range(2)]
        for shard in shards:
            set_epoch(shard, epoch)
        per_rank = [_labels_of(shard) for shard in shards]
        together = [sorted(a + b) for a, b in zip(*per_rank, strict=True)]
        assert together == [sorted(batch) for batch in _labels_of(whole)]


def test_batch_serving_loaders_are_sharded_and_padded_like_distributed_sampler() -> None:
    # A data set served whole lists of indices (batch_size=None), as mixq's CIFAR-10 loader.
    dataset = _dataset(5)
    loader = DataLoader(
        dataset, batch_size=None, sampler=BatchSampler(range(5), batch_size=2, drop_last=False)
    )
    shards = [_labels_of(shard_loader(loader, rank=r, world=2)) for r in range(2)]
    # 5 positions padded to 6: rank 0 takes 0, 2, 4; rank 1 takes 1, 3 and 0 again.
    assert shards == [[[0, 2], [4]], [[1, 3], [0]]]
    assert shard_loader(loader, rank=0, world=1) is loader


def test_a_loader_with_its_own_distributed_sampler_is_used_as_given() -> None:
    dataset = _dataset(8)
    sampler = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=False)
    loader = DataLoader(dataset, batch_size=2, sampler=sampler)
    assert shard_loader(loader, rank=1, world=2) is loader


def test_data_that_cannot_be_sharded_is_refused() -> None:
    batches = [(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(DistributedSetupError, match="must be a DataLoader"):
        shard_loader(batches, rank=0, world=2)


@pytest.mark.parametrize(("count", "world"), [(7, 3), (4, 4), (5, 2), (1, 1)])
def test_rank_shares_in_rank_order_are_the_items(count: int, world: int) -> None:
    items = list(range(count))
    shares = [rank_share(items, Ranks(rank, world)) for rank in range(world)]
    assert [item for share in shares for item in share] == items
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_fewer_items_than_processes_are_refused() -> None:
    with pytest.raises(DistributedSetupError, match="2 calibration batches for 3 processes"):
        rank_share([0, 1], Ranks(0, 3), "calibration batches")


def test_the_torchrun_environment_is_read_and_checked() -> None:
    ranks = launched_ranks({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert ranks == Ranks(rank=3, world=4, local_rank=1) and not ranks.is_main
    with pytest.raises(DistributedSetupError, match="RANK=4, WORLD_SIZE=4"):
        launched_ranks({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(DistributedSetupError, match="WORLD_SIZE='two'"):
        launched_ranks({"WORLD_SIZE": "two"})
    assert rank_device("cuda", ranks) == "cuda:1"
    with pytest.raises(DistributedSetupError, match="--device cuda:0"):
        rank_device("cuda:0", ranks)


def test_without_torchrun_no_group_is_started(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with process_group("cpu") as ranks:
        assert ranks == Ranks() and not torch.distributed.is_initialized()


def test_torchrun_variables_without_a_rendezvous_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(DistributedSetupError, match="MASTER_ADDR"), process_group("cpu"):
        pass
