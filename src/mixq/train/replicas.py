"""The model's replicas under ``torch.distributed``: DistributedDataParallel and the few
values the ranks agree on (the epoch's loss, the epoch record).

DDP averages every parameter's gradient over the ranks during the backward pass, so the
learned weight scales and activation clips, which are parameters, stay the same on every
rank, like any weight. Buffers (BatchNorm statistics, the activation quantisers'
``calibrated`` flags, the row codes) are broadcast from rank 0 when the model is wrapped
and before each forward (DDP's default), so every rank runs rank 0's statistics; the
activation quantisers' signedness is set by calibration, the same on every rank.
Parameters a forward does not use (the clip of a disabled activation quantiser) are
allowed (``find_unused_parameters``; PyTorch warns once when there are none).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mixq.batches import model_device
from mixq.distributed_env import is_distributed


def replicate(model: nn.Module) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel under a process group, else itself.

    Wrapping broadcasts rank 0's parameters and buffers, so every rank starts the same."""
    if not is_distributed():
        return model
    device = model_device(model)
    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of ``value`` over the ranks (``value`` alone), reduced in float64 on
    ``device`` (the model's: a group of NCCL alone carries no CPU tensor)."""
    if not is_distributed():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total[0]) / dist.get_world_size()
