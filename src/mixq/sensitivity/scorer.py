"""RMSMP's Hessian rule: which rows of a layer keep the higher precision.

A row's score is its Hessian trace per weight times the squared error it would suffer at the
ratio's lowest precision, ``trace_r / n_r * ||Q_low(w_r) - w_r||^2`` (HAWQ's perturbation,
per row). The rows with the highest scores take the candidates with the most bits; among
rows of equal bits the recipe's scheme rule (variance, by default) still picks the scheme.

    qnet = mixq.quantize(model, "rmsmp", row_scorer=HessianRowScorer(table))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor, nn

from mixq.allocation.rows import assign_layer_rows
from mixq.assignment import RowAssignment
from mixq.errors import SensitivityError
from mixq.plan import LayerPlan, Plan
from mixq.ratio import Ratio
from mixq.recipe import Recipe
from mixq.scoring import perturbation_scorer
from mixq.sensitivity.folded import folded_float_copy, layer_weight
from mixq.sensitivity.table import SensitivityTable
from mixq.swap import quantizable_layer_names


@dataclass(frozen=True, eq=False)
class HessianRowScorer:
    """A :data:`mixq.scoring.RowScorer` that weighs each row's error by its Hessian trace."""

    table: SensitivityTable

    def __call__(self, name: str, w_rows: Tensor, ratio: Ratio) -> np.ndarray:
        layer = self.table.layer(name)
        rows, per_row = w_rows.shape
        if (rows, per_row) != (layer.shape.rows, layer.shape.macs_per_row):
            raise SensitivityError(
                f"layer {name!r} has {rows}x{per_row} weights but the sensitivity table "
                f"measured {layer.shape.rows}x{layer.shape.macs_per_row}: another model?"
            )
        return layer.row_mean_traces * perturbation_scorer(name, w_rows, ratio)


def hessian_rmsmp_plan(
    model: nn.Module, table: SensitivityTable, recipe: Recipe | str = "rmsmp"
) -> Plan:
    """The plan that ``mixq.quantize(model, recipe, row_scorer=HessianRowScorer(table))``
    follows, with every layer's exact row assignment (method ``rmsmp-hessian``)."""
    recipe = Recipe.coerce(recipe)
    folded = folded_float_copy(model, fold_bn=recipe.fold_bn)
    scorer = HessianRowScorer(table)
    layers: dict[str, LayerPlan] = {}
    for name, config in recipe.resolve(quantizable_layer_names(folded)).items():
        if config is None:
            continue
        weight = layer_weight(folded, name)
        w_rows = weight.reshape(weight.shape[0], -1)
        assignment = _assignment(name, w_rows, config.ratio, recipe, scorer)
        layers[name] = LayerPlan(config.ratio, config.act_bits, assignment)
    return Plan(layers, method="rmsmp-hessian", metadata={"recipe": recipe.to_dict()})


def _assignment(
    name: str, w_rows: Tensor, ratio: Ratio, recipe: Recipe, scorer: HessianRowScorer
) -> RowAssignment:
    return assign_layer_rows(
        w_rows, ratio, lambda: scorer(name, w_rows, ratio), recipe.scheme_rule, recipe.scale_method
    )
