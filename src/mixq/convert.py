"""Model conversion by module swap: ``quantize(model, recipe, ...)`` returns a quantised copy."""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixq.allocation.rows import RowStats, assign_rows
from mixq.assignment import RowAssignment
from mixq.calibrate import calibrate
from mixq.errors import (
    NonFiniteWeightError,
    NoQuantizableLayerError,
    RecipeError,
    UnsupportedLayerError,
    UnusedRuleWarning,
)
from mixq.fold import find_conv_bn_pairs
from mixq.nn.layers import QUANT_LAYERS, QuantConv2d, QuantLinear
from mixq.nn.weight_quant import quantization_errors
from mixq.plan import Plan
from mixq.ptq.rounding import apply_error_feedback
from mixq.recipe import LayerConfig, Recipe
from mixq.scoring import RowScorer, get_scorer, row_shape

QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


def quantizable_layer_names(model: nn.Module) -> list[str]:
    """Names of the Conv2d and Linear layers not yet quantised, in module order."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, QUANTIZABLE_TYPES) and not isinstance(module, QUANT_LAYERS)
    ]


def quantize(
    model: nn.Module,
    recipe: Recipe | str | Path | Mapping[str, Any] = "rmsmp",
    *,
    calibration_data: Iterable[Any] | None = None,
    calibration_batches: int = 8,
    row_scorer: str | RowScorer | None = None,
    plan: Plan | None = None,
    inplace: bool = False,
    progress: bool = True,
) -> nn.Module:
    """Return a copy of ``model`` whose Conv2d/Linear layers are quantised per ``recipe``.

    Weights get their row assignment and clip levels at once; activation quantisers are
    calibrated on ``calibration_data`` (batches as a model input, an ``(input, target)``
    pair, or a dict of keyword inputs), and with the recipe's ``weight_rounding="gptq"``
    (the default) the weights are then rounded with error feedback on the same batches.
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
    target = model if inplace else copy.deepcopy(model)
    fixed_rows: dict[str, RowAssignment] = {}
    if plan is not None:
        _check_plan(target, plan)
        recipe = plan.apply_to(recipe)
        fixed_rows = {n: lp.assignment for n, lp in plan.layers.items() if lp.assignment}
    names = _check_rules(target, recipe)
    configs = recipe.resolve(names)
    if not any(configs.values()):
        raise NoQuantizableLayerError(
            "the recipe quantises no layer of this model "
            f"({len(names)} Conv2d/Linear layers found, all skipped or none present)"
        )
    bn_pairs = find_conv_bn_pairs(target) if recipe.fold_bn else {}
    scorer = get_scorer(row_scorer if row_scorer is not None else recipe.row_scorer)
    for name, config in configs.items():
        if config is not None:
            swapped = _swap_layer(
                target, name, config, recipe, bn_pairs.get(name), scorer, fixed_rows.get(name)
            )
            if name == "":  # the model is itself a single layer
                target = swapped
    if calibration_data is None:
        return target
    # Calibration and rounding both read the batches: fetch them once (a generator would
    # be exhausted by the first pass).
    batches = list(itertools.islice(calibration_data, calibration_batches))
    calibrate(target, batches, batches=calibration_batches, progress=progress)
    if recipe.weight_rounding == "gptq":
        apply_error_feedback(target, batches, batches=calibration_batches, progress=progress)
        # Activation ranges were measured with nearest-rounded weights: measure again.
        calibrate(target, batches, batches=calibration_batches, progress=progress)
    return target


def _check_plan(model: nn.Module, plan: Plan) -> None:
    names = set(quantizable_layer_names(model))
    unknown = sorted(set(plan.layers) - names)
    if unknown:
        raise RecipeError(f"the plan names layers this model lacks or cannot quantise: {unknown}")
    for name, layer in plan.layers.items():
        rows = model.get_submodule(name).weight.shape[0]
        if layer.assignment is not None and layer.assignment.rows != rows:
            raise RecipeError(
                f"plan for {name!r} assigns {layer.assignment.rows} rows; the layer has {rows}"
            )


def _check_rules(model: nn.Module, recipe: Recipe) -> list[str]:
    names = quantizable_layer_names(model)
    modules = dict(model.named_modules())
    for rule in recipe.rules:
        module = modules.get(rule.match)
        if module is not None and not rule.skip and not isinstance(module, QUANTIZABLE_TYPES):
            raise UnsupportedLayerError(
                f"rule {rule.match!r} targets a {type(module).__name__}; mixq quantises "
                "Conv2d and Linear layers"
            )
    for rule in recipe.unused_rules(names):
        warnings.warn(
            f"recipe rule {rule.match!r} matches no quantisable layer",
            UnusedRuleWarning,
            stacklevel=3,
        )
    return names


def _swap_layer(
    model: nn.Module,
    name: str,
    config: LayerConfig,
    recipe: Recipe,
    bn_name: str | None,
    scorer: RowScorer,
    fixed_rows: RowAssignment | None = None,
) -> nn.Module:
    float_layer = model.get_submodule(name)
    bn = model.get_submodule(bn_name) if bn_name else None
    _check_finite(name, float_layer, bn)
    placeholder = RowAssignment.uniform(config.ratio.candidates[0], float_layer.weight.shape[0])
    kwargs = {
        "act_bits": config.act_bits,
        "act_signed": config.act_signed,
        "act_method": recipe.act_method,
    }
    if isinstance(float_layer, nn.Conv2d):
        layer: QuantConv2d | QuantLinear = QuantConv2d.from_float(
            float_layer, placeholder, bn=bn, **kwargs
        )
    else:
        layer = QuantLinear.from_float(float_layer, placeholder, **kwargs)
    w_rows = layer.weight_rows().detach()
    assignment = fixed_rows or _assign(name, w_rows, config, recipe, scorer)
    layer.weight_quant.set_assignment(assignment)
    layer.weight_quant.init_scales(w_rows, recipe.scale_method)
    layer.folded_bn_name = bn_name
    if name:
        set_submodule(model, name, layer)
    if bn_name:
        set_submodule(model, bn_name, nn.Identity())
    return layer


def _assign(
    name: str, w_rows: torch.Tensor, config: LayerConfig, recipe: Recipe, scorer: RowScorer
) -> RowAssignment:
    ratio = config.ratio
    if len(ratio.candidates) == 1:
        return RowAssignment.uniform(ratio.candidates[0], w_rows.shape[0])
    errors = {}
    if recipe.scheme_rule == "error":
        errors = {
            c: e.double().cpu().numpy()
            # With the clip levels the layer will use, so the errors compared are its own.
            for c, e in quantization_errors(w_rows, ratio.candidates, recipe.scale_method).items()
        }
    stats = RowStats(scorer(name, w_rows, ratio), row_shape(w_rows), errors)
    return assign_rows(ratio, stats, recipe.scheme_rule)


def _check_finite(name: str, layer: nn.Module, bn: nn.Module | None) -> None:
    tensors = dict(layer.named_parameters())
    if bn is not None:
        tensors.update({f"bn.{k}": v for k, v in bn.state_dict().items() if v.is_floating_point()})
    for key, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise NonFiniteWeightError(f"layer {name!r}: {key} contains NaN or Inf values")


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
