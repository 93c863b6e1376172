"""Sharing Hutchinson probes among the processes of ``torch.distributed`` (torchrun).

Every rank runs the same estimation with the same data and seed, so every rank draws the
same probes and the same batches; each computes only its share of the products (probe
``k`` on rank ``k mod N``), and the per-probe row sums are then summed over ranks into a
table that is zero wherever a rank did not compute. Adding zeros is exact, so every rank
holds every probe's sample, in the order one process would add them: the stopping rule
takes the same decisions everywhere, and N processes give the table one process gives
for the same probes (up to the float rounding of computing a product in a batch of
another size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class ProbeShare:
    """Which probes this process computes: those ``k`` with ``k % world == rank``.

    >>> ProbeShare(rank=1, world=2).indices(5)
    [1, 3]
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> ProbeShare:
        """This process's share under ``torch.distributed``, or all probes outside it."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def indices(self, count: int) -> list[int]:
        return list(range(self.rank, count, self.world))

    def combine(self, per_probe: Tensor) -> None:
        """Sum, in place, every rank's rows of ``per_probe`` (zero where not computed)."""
        if self.world > 1:
            dist.all_reduce(per_probe)
