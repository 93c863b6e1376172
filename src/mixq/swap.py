"""Model conversion by module swap: float layers replaced by quantised ones, no data needed.

``swap_layers(model, recipe)`` builds each quantised layer with its row assignment and
clip levels; calibration and error-feedback rounding (:func:`mixq.quantize`) come after.
Which module types are swapped, and for what, is the registry of :mod:`mixq.mappings`
(Conv2d and Linear built in; :func:`mixq.register_layer_mapping` adds more). Sensitivity,
checkpoints and ``quantize`` all build on this module; it imports none of them.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixq.allocation.rows import assign_layer_rows
from mixq.assignment import RowAssignment
from mixq.errors import (
    FloatLayerWarning,
    NonFiniteWeightError,
    NoQuantizableLayerError,
    RecipeError,
    UnfoldedBatchNormWarning,
    UnsupportedLayerError,
    UnusedRuleWarning,
)
from mixq.fold import find_conv_bn_pairs
from mixq.mappings import (
    is_quantizable,
    layer_builder,
    mapped_types,
    unfolded_batchnorms,
    unsupported_weight_layers,
    weight_row_count,
)
from mixq.plan import Plan
from mixq.recipe import LayerConfig, Recipe
from mixq.scoring import RowScorer, get_scorer

QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)  # the built-ins


def quantizable_layer_names(model: nn.Module) -> list[str]:
    """Names of the layers a mapping covers (Conv2d, Linear, registered types) not yet
    quantised, in module order."""
    return [name for name, module in model.named_modules() if is_quantizable(module)]


def swap_layers(
    model: nn.Module,
    recipe: Recipe | str | Path | Mapping[str, Any] = "rmsmp",
    *,
    row_scorer: str | RowScorer | None = None,
    plan: Plan | None = None,
    inplace: bool = False,
    stacklevel: int = 1,
) -> nn.Module:
    """Return a copy of ``model`` (``model`` itself if ``inplace``) whose mapped layers are
    quantised per ``recipe``, weights rounded to nearest and activation quantisers not yet
    calibrated. ``row_scorer`` and ``plan`` act as in :func:`mixq.quantize`; the warnings
    point ``stacklevel`` frames above this call (``quantize`` passes 2: its own caller).

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> q = swap_layers(net, Recipe.preset("msp", first_last=None))
    >>> type(q[0]).__name__, type(net[0]).__name__
    ('QuantLinear', 'Linear')
    """
    recipe = Recipe.coerce(recipe)
    warn_level = stacklevel + 2  # the warning helpers, then this function
    target = model if inplace else copy.deepcopy(model)
    fixed_rows: dict[str, RowAssignment] = {}
    if plan is not None:
        _check_plan(target, plan)
        recipe = plan.apply_to(recipe)
        fixed_rows = {n: lp.assignment for n, lp in plan.layers.items() if lp.assignment}
    names = _check_rules(target, recipe, warn_level)
    configs = recipe.resolve(names)
    if not any(configs.values()):
        raise NoQuantizableLayerError(
            "the recipe quantises no layer of this model "
            f"({len(names)} Conv2d/Linear layers found, all skipped or none present)"
        )
    bn_pairs = find_conv_bn_pairs(target) if recipe.fold_bn else {}
    _warn_float_layers(target, warn_level)
    scorer = get_scorer(row_scorer if row_scorer is not None else recipe.row_scorer)
    for name, config in configs.items():
        if config is not None:
            swapped = _swap_layer(
                target, name, config, recipe, bn_pairs.get(name), scorer, fixed_rows.get(name)
            )
            if name == "":  # the model is itself a single layer
                target = swapped
    _check_all_finite(target)  # the layers left in float (swapped ones were checked)
    if recipe.fold_bn:
        _warn_unfolded_bn(target, set(bn_pairs.values()), warn_level)
    return target


def _check_all_finite(model: nn.Module) -> None:
    """Every float tensor of the model, quantised layers or not (a corrupt weights file)."""
    for key, tensor in model.state_dict().items():
        floating = torch.is_tensor(tensor) and tensor.is_floating_point()
        if floating and not bool(torch.isfinite(tensor).all()):
            module, _, tensor_name = key.rpartition(".")
            raise NonFiniteWeightError(
                f"layer {module!r}: {tensor_name} contains NaN or Inf values"
            )


def _warn_float_layers(model: nn.Module, stacklevel: int) -> None:
    names = unsupported_weight_layers(model)
    if names:
        kinds = sorted({type(model.get_submodule(n)).__name__ for n in names})
        warnings.warn(
            f"{len(names)} layer(s) of type {', '.join(kinds)} stay in float (no quantised "
            f"mapping; mixq.register_layer_mapping adds one): {', '.join(names[:8])}"
            + (" ..." if len(names) > 8 else ""),
            FloatLayerWarning,
            stacklevel=stacklevel,
        )


def _warn_unfolded_bn(model: nn.Module, foldable: set[str], stacklevel: int) -> None:
    # A foldable BN left alone belongs to a conv the recipe skips: expected, not warned.
    left = [n for n in unfolded_batchnorms(model) if n not in foldable]
    if left:
        warnings.warn(
            f"BatchNorm layer(s) not folded, kept in float: {', '.join(left[:8])}"
            + (" ..." if len(left) > 8 else "")
            + " (only a BatchNorm2d fed by a Conv2d used once, and feeding it alone, is "
            "folded; the integer engine cannot run the rest)",
            UnfoldedBatchNormWarning,
            stacklevel=stacklevel,
        )


def _check_plan(model: nn.Module, plan: Plan) -> None:
    names = set(quantizable_layer_names(model))
    unknown = sorted(set(plan.layers) - names)
    if unknown:
        raise RecipeError(f"the plan names layers this model lacks or cannot quantise: {unknown}")
    for name, layer in plan.layers.items():
        rows = weight_row_count(model.get_submodule(name))
        if layer.assignment is not None and layer.assignment.rows != rows:
            raise RecipeError(
                f"plan for {name!r} assigns {layer.assignment.rows} rows; the layer has {rows}"
            )


def _check_rules(model: nn.Module, recipe: Recipe, stacklevel: int) -> list[str]:
    names = quantizable_layer_names(model)
    modules = dict(model.named_modules())
    for rule in recipe.rules:
        module = modules.get(rule.match)
        if module is not None and not rule.skip and not is_quantizable(module):
            kinds = ", ".join(t.__name__ for t in mapped_types())
            raise UnsupportedLayerError(
                f"rule {rule.match!r} targets a {type(module).__name__}; mixq quantises "
                f"{kinds} layers (mixq.register_layer_mapping adds more)"
            )
    for rule in recipe.unused_rules(names):
        warnings.warn(
            f"recipe rule {rule.match!r} matches no quantisable layer",
            UnusedRuleWarning,
            stacklevel=stacklevel,
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
    placeholder = RowAssignment.uniform(config.ratio.candidates[0], weight_row_count(float_layer))
    build = layer_builder(float_layer)
    assert build is not None, "quantizable_layer_names lists only mapped layers"
    layer: Any = build(
        float_layer,
        placeholder,
        bn=bn,
        act_bits=config.act_bits,
        act_signed=config.act_signed,
        act_method=recipe.act_method,
    )
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
    # The one rule the Hessian scorer and the perturbation tables use too.
    return assign_layer_rows(
        w_rows,
        config.ratio,
        lambda: scorer(name, w_rows, config.ratio),
        recipe.scheme_rule,
        recipe.scale_method,
    )


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
