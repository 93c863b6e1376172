"""Each process's share of the training data under ``torch.distributed`` (torchrun).

Every process builds the same loader (same data, same seed); :func:`shard_loader` rebuilds
it so that each visits its share of the loader's own order: PyTorch's
``DistributedSampler`` (without a shuffle of its own) over the positions of that order,
so rank ``r`` of ``N`` takes positions ``r, r + N, ...``, padded with the first positions
to a multiple of ``N`` as ``DistributedSampler`` pads. With a per-process batch of ``b``,
step ``s`` of the N processes together covers positions ``s*N*b`` to ``(s+1)*N*b - 1``:
exactly the batch ``s`` one process sees with a batch of ``N*b``. A data set with a
``for_rank(rank)`` method (mixq's CIFAR-10, whose augmentation is random) is replaced by
its view for the rank, so each rank draws its own augmentation stream (rank 0 the one
process's). The global batch is the
per-process batch times the number of processes, and the order, a function of
``(seed, epoch)``, does not depend on how many processes share it, which is what lets a
run resume with another number of processes.

>>> order = list(ShardedSampler(range(5), rank=1, world=2))
>>> order  # positions 1 and 3, then 0 again as padding to 3 per rank
[1, 3, 0]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    IterableDataset,
    Sampler,
)

from mixq.errors import DistributedSetupError


class ShardedSampler(Sampler[int]):
    """Rank ``rank``'s share of ``order`` (a sampler, or any sized iterable of indices)."""

    def __init__(self, order: Any, *, rank: int, world: int) -> None:
        self.order = order
        self.rank = rank
        self.world = world
        self.positions: DistributedSampler[int] = DistributedSampler(
            _Positions(len(order)), num_replicas=world, rank=rank, shuffle=False, drop_last=False
        )

    def set_epoch(self, epoch: int) -> None:
        """Move the underlying order to ``epoch`` (an epoch-seeded shuffle draws anew)."""
        if hasattr(self.order, "set_epoch"):
            self.order.set_epoch(epoch)
        self.positions.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        indices = list(self.order)  # every rank draws the same order: same data, same seed
        for position in self.positions:
            yield indices[position]

    def __len__(self) -> int:
        return len(self.positions)


class _Positions(Dataset[int]):
    """What ``DistributedSampler`` needs of a data set: its length (it never reads items)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


def shard_loader(loader: Any, *, rank: int, world: int) -> Any:
    """``loader`` itself for one process, or already sharded (a ``DistributedSampler`` in
    it); otherwise a DataLoader over the same data set that yields this rank's share of
    each epoch, batch by batch (see the module docstring). Batches are formed as
    ``loader`` forms them (``batch_size``, ``drop_last``, ``collate_fn``, workers)."""
    if world <= 1 or _already_sharded(loader):
        return loader
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        raise DistributedSetupError(
            f"under torchrun the training data must be a DataLoader over a map-style data "
            f"set (mixq shards it with DistributedSampler), got {type(loader).__name__}; or "
            "give a DataLoader with your own DistributedSampler"
        )
    options: dict[str, Any] = {
        "collate_fn": loader.collate_fn,
        "num_workers": loader.num_workers,
        "pin_memory": loader.pin_memory,
        "worker_init_fn": loader.worker_init_fn,
        "generator": loader.generator,
    }
    dataset = _rank_dataset(loader.dataset, rank)
    if loader.batch_sampler is None and type(loader.sampler) is BatchSampler:
        # A data set served whole batches of indices (mixq's CIFAR-10 and Fashion-MNIST).
        batches = _sharded_batches(loader.sampler, rank, world)
        return DataLoader(dataset, batch_size=None, sampler=batches, **options)
    if type(loader.batch_sampler) is BatchSampler:
        batches = _sharded_batches(loader.batch_sampler, rank, world)
        return DataLoader(dataset, batch_sampler=batches, **options)
    raise DistributedSetupError(
        "cannot shard this DataLoader under torchrun: it has a custom batch sampler "
        f"({type(loader.batch_sampler or loader.sampler).__name__}); give it a "
        "DistributedSampler yourself"
    )


def _rank_dataset(dataset: Any, rank: int) -> Any:
    """This rank's view of a data set that draws randomness of its own (mixq's CIFAR-10
    augmentation: ``for_rank``), so that ranks do not all draw the same stream; any other
    data set as it is."""
    for_rank = getattr(dataset, "for_rank", None)
    return dataset if for_rank is None else for_rank(rank)


def _sharded_batches(batches: BatchSampler, rank: int, world: int) -> BatchSampler:
    order = ShardedSampler(batches.sampler, rank=rank, world=world)
    return BatchSampler(order, batches.batch_size, batches.drop_last)


def _already_sharded(loader: Any) -> bool:
    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    parts = (
        sampler,
        getattr(sampler, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
    )
    return any(isinstance(part, DistributedSampler | ShardedSampler) for part in parts)
