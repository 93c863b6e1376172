"""Process-group setup and rank helpers for runs under ``torchrun`` (``torch.distributed``).

``torchrun --nproc_per_node=N`` starts N copies of a command with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment.
:func:`process_group` reads them and starts PyTorch's own process group: gloo on the CPU;
on CUDA, NCCL for CUDA tensors and gloo for CPU tensors (``"cpu:gloo,cuda:nccl"``: the
Hessian pass reduces its per-probe sums on the CPU). Outside torchrun, or with
``WORLD_SIZE=1``, nothing is started and :class:`Ranks` says rank 0 of 1, so one code path
serves both.

>>> Ranks().is_main, Ranks(rank=1, world=2).is_main
(True, False)
>>> rank_device("cuda", Ranks(rank=1, world=2, local_rank=1))
'cuda:1'
>>> rank_device("cpu", Ranks(rank=1, world=2, local_rank=1))
'cpu'
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from mixq.errors import DistributedSetupError

T = TypeVar("T")

_ENV_NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of a run (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # rank on this machine: the CUDA device index it takes

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, shows progress and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def current(cls) -> Ranks:
        """The ranks of the initialised process group, or rank 0 of 1 without one."""
        if not is_distributed():
            return cls()
        local = _env_int(os.environ, "LOCAL_RANK", dist.get_rank())
        return cls(dist.get_rank(), dist.get_world_size(), local)


def is_distributed() -> bool:
    """A process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def launched_ranks(environ: Mapping[str, str] | None = None) -> Ranks:
    """The ranks ``torchrun`` put in the environment (rank 0 of 1 when it did not).

    >>> launched_ranks({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    Ranks(rank=1, world=2, local_rank=1)
    >>> launched_ranks({})
    Ranks(rank=0, world=1, local_rank=0)
    """
    env = os.environ if environ is None else environ
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedSetupError(
            f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local} (need 0 <= RANK < WORLD_SIZE)"
        )
    return Ranks(rank, world, local)


def rank_device(device: str, ranks: Ranks) -> str:
    """The device this rank runs on: ``cuda`` becomes ``cuda:LOCAL_RANK`` under torchrun
    (one GPU per process); a CUDA index given with several processes is refused, since
    every process would take the same GPU."""
    parsed = torch.device(device)
    if parsed.type != "cuda" or not ranks.distributed:
        return device
    if parsed.index is not None:
        raise DistributedSetupError(
            f"--device {device} under torchrun with {ranks.world} processes: give --device "
            "cuda, and each process takes the GPU of its LOCAL_RANK"
        )
    return f"cuda:{ranks.local_rank}"


def backend_for(device: torch.device) -> str:
    """gloo on the CPU; NCCL for CUDA tensors (gloo still carries CPU tensors)."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


@contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator[Ranks]:
    """Start the process group torchrun asked for (``WORLD_SIZE > 1``), yield the ranks,
    and end it on the way out. A group that is already running is used as it is (and left
    running); without torchrun this yields rank 0 of 1 and starts nothing."""
    if dist.is_available() and dist.is_initialized():
        yield Ranks.current()
        return
    ranks = launched_ranks()
    if not ranks.distributed:
        yield ranks
        return
    if not dist.is_available():
        raise DistributedSetupError("this PyTorch build has no torch.distributed")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise DistributedSetupError(
            f"WORLD_SIZE={ranks.world} but {', '.join(missing)} not set: start the command "
            "with torchrun --nproc_per_node=N"
        )
    target = torch.device(device)
    if target.type == "cuda":
        torch.cuda.set_device(target)
    dist.init_process_group(backend_for(target), rank=ranks.rank, world_size=ranks.world)
    try:
        yield ranks
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (nothing to wait for outside a process group)."""
    if is_distributed():
        dist.barrier()


def broadcast_from_main(value: T) -> T:
    """Rank 0's ``value`` on every rank (a picklable object); ``value`` itself alone."""
    if not is_distributed():
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: T) -> list[T]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` alone)."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def rank_share(items: Sequence[T], ranks: Ranks, what: str = "items") -> list[T]:
    """This rank's contiguous share of ``items``: rank ``r`` of ``N`` takes
    ``items[r*n//N : (r+1)*n//N]``, so the shares in rank order are ``items`` again (what
    calibration and GPTQ's moment sums need to equal one process on all of them). Fewer
    ``items`` than processes raise :class:`DistributedSetupError` naming ``what`` they are.

    >>> [rank_share("abcde", Ranks(rank, 2)) for rank in range(2)]
    [['a', 'b'], ['c', 'd', 'e']]
    >>> rank_share("abc", Ranks())
    ['a', 'b', 'c']
    """
    count = len(items)
    if count < ranks.world:
        raise DistributedSetupError(
            f"{count} {what} for {ranks.world} processes: every process needs at least one"
        )
    return list(items[ranks.rank * count // ranks.world : (ranks.rank + 1) * count // ranks.world])


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise DistributedSetupError(
            f"environment variable {name}={text!r} is not an integer (set by torchrun)"
        ) from None
