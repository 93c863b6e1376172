"""``quantize(model, recipe, ...)``: a float model in, a calibrated, rounded quantised copy out.

The pipeline's steps each live in their own module: the module swap (:mod:`mixq.swap`),
activation calibration (:mod:`mixq.calibrate`) and error-feedback rounding
(:mod:`mixq.ptq`). This module only orders them, so it sits above all three.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from mixq.calibrate import calibrate, take_batches
from mixq.plan import Plan
from mixq.ptq.rounding import apply_error_feedback
from mixq.recipe import Recipe
from mixq.scoring import RowScorer
from mixq.swap import QUANTIZABLE_TYPES, quantizable_layer_names, set_submodule, swap_layers

# Re-exported: these lived here before the swap had its own module.
__all__ = ["QUANTIZABLE_TYPES", "quantizable_layer_names", "quantize", "set_submodule"]


def quantize(
    model: nn.Module,
    recipe: Recipe | str | Path | Mapping[str, Any] = "rmsmp",
    *,
    calibration_data: Iterable[Any] | None = None,
    calibration_batches: int | None = None,
    row_scorer: str | RowScorer | None = None,
    plan: Plan | None = None,
    inplace: bool = False,
    progress: bool = True,
) -> nn.Module:
    """Return a copy of ``model`` whose Conv2d/Linear layers are quantised per ``recipe``.

    Weights get their row assignment and clip levels at once; activation quantisers are
    calibrated on the first ``calibration_batches`` (default 8; more data without an
    explicit count gives a :class:`~mixq.errors.CalibrationDataWarning`) batches of
    ``calibration_data`` (batches as a model input, an ``(input, target)`` pair, or a dict
    of keyword inputs), and with the recipe's ``weight_rounding="gptq"`` (the default) the
    weights are then rounded with error feedback on the same batches. GPTQ writes the
    rounded-with-feedback values into the layers' float weights (the float copy the
    quantiser reads): the returned model's float weights are no longer the input model's,
    so evaluating it with quantisation switched off does not show the float model; keep
    ``model`` itself (``quantize`` copies it unless ``inplace``) for that.
    Without data, weights are rounded to nearest and activation quantisers stay
    uncalibrated until :func:`mixq.calibrate` runs. ``row_scorer`` overrides the recipe's
    (a Hessian scorer, say). A ``plan`` (from an allocation method) overrides the recipe
    for the layers it names, including exact row assignments where it holds them.

    >>> import torch
    >>> from torch import nn
    >>> from mixq.summary import describe
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> q = quantize(net, "msp", calibration_data=[torch.randn(32, 8)], progress=False)
    >>> [layer.counts for layer in describe(q).layers]  # first and last stay 8-bit in presets
    [{'fixed-8': 16}, {'fixed-8': 4}]
    >>> q = quantize(net, Recipe.preset("msp", first_last=None), progress=False)
    >>> describe(q).layers[0].counts
    {'sp2-4': 8, 'fixed-4': 8}
    """
    recipe = Recipe.coerce(recipe)
    # Batches are checked (form, count) before any work; a generator is read once here
    # because calibration and rounding both read them.
    batches = (
        None if calibration_data is None else take_batches(calibration_data, calibration_batches)
    )
    target = swap_layers(
        model, recipe, row_scorer=row_scorer, plan=plan, inplace=inplace, stacklevel=2
    )
    if batches is None:
        return target
    calibrate(target, batches, batches=len(batches), progress=progress)
    if recipe.weight_rounding == "gptq":
        apply_error_feedback(target, batches, batches=len(batches), progress=progress)
        # Activation ranges were measured with nearest-rounded weights: measure again.
        calibrate(target, batches, batches=len(batches), progress=progress)
    return target
