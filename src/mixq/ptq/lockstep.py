"""Running a model over several batches in lockstep, one watched layer at a time.

Every batch's forward runs in its own thread, but only one thread runs at any moment: a
forward stops at each watched layer's pre-hook until every batch has reached that layer;
then ``at_layer`` runs (GPTQ rounds the layer there) and the forwards resume in batch order.
So each layer sees inputs produced by the layers already processed before it, as a
layer-by-layer loop over full forwards gives, but the model runs once over the data instead
of once per layer, and any model works: residual blocks, keyword inputs, tokens of any
length. The per-batch computations are the same as a plain forward's, batch by batch, in
the same order, so the sums the hooks accumulate are bitwise the same.

A layer reached twice in one forward, or batches that reach different layers (data-
dependent control flow), raise :class:`LockstepOrderError`; the caller falls back to the
layer-by-layer loop.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mixq.calibrate import run_batch
from mixq.errors import CalibrationError

Hook = Callable[[nn.Module, tuple[Any, ...]], None]


class LockstepOrderError(CalibrationError):
    """The batches do not visit the watched layers once each, in one common order."""


class _Abort(BaseException):
    """Unwinds a paused forward when the run stops early (not an error of the model)."""


_PAUSED, _DONE, _FAILED = "paused", "done", "failed"


def run_in_lockstep(
    model: nn.Module,
    batches: Sequence[Any],
    device: torch.device,
    layers: Sequence[nn.Module],
    on_input: Callable[[nn.Module], Hook],
    at_layer: Callable[[nn.Module], None],
) -> list[nn.Module]:
    """Run every batch through ``model`` once; returns the watched layers in the order met.

    ``on_input(layer)`` gives the pre-hook that sees each batch's input to ``layer`` (batch
    0 first); ``at_layer(layer)`` runs once all batches have reached ``layer``, before any
    goes through it. Watched layers that no batch reaches are not in the returned list.
    """
    run = _Lockstep(model, batches, device)
    handles = [layer.register_forward_pre_hook(run.pre_hook(on_input(layer))) for layer in layers]
    try:
        return run.drive(at_layer)
    finally:
        for handle in handles:
            handle.remove()
        run.stop()


class _Lockstep:
    def __init__(self, model: nn.Module, batches: Sequence[Any], device: torch.device) -> None:
        self.model, self.batches, self.device = model, batches, device
        self.turns = [threading.Semaphore(0) for _ in batches]
        self.reports: queue.SimpleQueue[tuple[int, str, Any]] = queue.SimpleQueue()
        self.local = threading.local()
        self.aborting = False
        # OpenMP's thread count is per thread: new threads would otherwise take every core.
        self.num_threads = torch.get_num_threads()
        self.threads = [
            threading.Thread(target=self._forward, args=(k,), daemon=True)
            for k in range(len(batches))
        ]

    def pre_hook(self, on_input: Hook) -> Hook:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            index = getattr(self.local, "index", None)
            if index is None:  # a forward outside the run (another thread): not ours
                return
            on_input(module, args)
            self.reports.put((index, _PAUSED, module))
            self._wait_turn(index)

        return hook

    def drive(self, at_layer: Callable[[nn.Module], None]) -> list[nn.Module]:
        for thread in self.threads:
            thread.start()
        states = [self._resume(k) for k in range(len(self.batches))]
        visited: list[nn.Module] = []
        while any(state == _PAUSED for state, _ in states):
            layer = self._common_layer(states, visited)
            at_layer(layer)
            visited.append(layer)
            states = [self._resume(k) for k in range(len(self.batches))]
        return visited

    def stop(self) -> None:
        """Unwind the forwards still paused (after an error) and wait for every thread."""
        self.aborting = True
        for turn in self.turns:
            turn.release()
        for thread in self.threads:
            if thread.is_alive():
                thread.join()

    def _resume(self, index: int) -> tuple[str, Any]:
        self.turns[index].release()
        reported, state, payload = self.reports.get()
        if reported != index:  # only one forward runs at a time: cannot happen
            raise CalibrationError(f"lockstep run out of order: batch {reported}, not {index}")
        if state == _FAILED:
            raise payload
        return state, payload

    def _common_layer(self, states: list[tuple[str, Any]], visited: list[nn.Module]) -> nn.Module:
        layers = {id(payload): payload for state, payload in states if state == _PAUSED}
        if len(layers) > 1 or any(state == _DONE for state, _ in states):
            raise LockstepOrderError("the batches reach the quantised layers in different orders")
        (layer,) = layers.values()
        if any(layer is seen for seen in visited):
            raise LockstepOrderError("a quantised layer runs more than once per forward")
        return layer

    def _forward(self, index: int) -> None:
        self.local.index = index
        torch.set_num_threads(self.num_threads)
        try:
            self._wait_turn(index)
            with torch.no_grad():  # grad mode is per thread
                run_batch(self.model, self.batches[index], self.device)
        except _Abort:
            return
        except BaseException as exc:  # handed to the driving thread, which raises it
            self.reports.put((index, _FAILED, exc))
            return
        self.reports.put((index, _DONE, None))

    def _wait_turn(self, index: int) -> None:
        self.turns[index].acquire()
        if self.aborting:
            raise _Abort
