"""One forward pass with a hook on every Conv2d/Linear: the harness that layer shapes
(:mod:`mixq.shapes`) and CPU latency tables (:mod:`mixq.hw.cpu_latency`) both need."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mixq.batches import check_batches, model_device, run_checked

# Called once per Conv2d/Linear forward: (module name, module, its input, its output).
LayerRecorder = Callable[[str, nn.Conv2d | nn.Linear, torch.Tensor, torch.Tensor], None]


@torch.no_grad()
def run_with_layer_hooks(model: nn.Module, example: Any, record: LayerRecorder) -> None:
    """Run ``example`` (a batch as :func:`mixq.calibrate` takes it) through ``model`` in
    eval mode, calling ``record`` for every Conv2d/Linear; the hooks and the model's mode
    are restored whatever happens. A batch the model refuses raises
    :class:`~mixq.errors.CalibrationError`.

    >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    >>> seen = []
    >>> run_with_layer_hooks(net, torch.zeros(4, 3),
    ...                      lambda name, m, x, y: seen.append((name, tuple(x.shape))))
    >>> seen, net.training
    ([('0', (4, 3)), ('2', (4, 2))], True)
    """
    check_batches([example])
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):

            def hook(
                _mod: nn.Module,
                args: tuple[Any, ...],
                out: Any,
                name: str = name,
                layer: nn.Conv2d | nn.Linear = module,
            ) -> None:
                record(name, layer, args[0], out)

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        run_checked(model, example, model_device(model), 1)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
