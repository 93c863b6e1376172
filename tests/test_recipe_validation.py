"""Every recipe field is checked when the recipe is built, from Python or from a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mixq
from mixq.errors import RecipeError, SchemeError
from mixq.nn.act_quant import ACT_BITS_RANGE as LAYER_ACT_BITS_RANGE
from mixq.recipe import ACT_BITS_RANGE, LayerConfig, Recipe, Rule
from mixq.scoring import register_row_scorer

GOOD = Recipe.preset("msp").to_dict()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rules": [{"match": "x", "skip": "false"}]}, r"skip must be a boolean .* got 'false'"),
        ({"rules": [{"match": "x", "skip": 1}]}, r"skip must be a boolean"),
        ({"fold_bn": "no"}, r"fold_bn must be a boolean .* got 'no'"),
        ({"default": {"ratio": "fixed-4", "act_signed": "yes"}}, r"act_signed must be a boolean"),
        ({"rules": [{"match": "x", "act_signed": 0}]}, r"act_signed must be a boolean"),
        ({"row_scorer": "perturbaton"}, r"unknown row scorer 'perturbaton'; known: magnitude"),
        ({"row_scorer": 3}, r"unknown row scorer 3"),
        ({"default": {"ratio": "fixed-4", "act_bits": "8"}}, r"act_bits must be 0 .* got '8'"),
        ({"default": {"ratio": "fixed-4", "act_bits": True}}, r"act_bits must be 0"),
        ({"default": {"ratio": "fixed-4", "act_bits": 8.0}}, r"act_bits must be 0"),
        ({"default": {"ratio": 4}}, r"default ratio must be a ratio"),
        ({"rules": [{"match": None}]}, r"match must be a non-empty string"),
        ({"rules": [{"match": ""}]}, r"match must be a non-empty string"),
        ({"scheme_rule": ["variance"]}, r"scheme_rule must be 'variance' or 'error'"),
        ({"weight_rounding": "GPTQ"}, r"weight_rounding must be 'nearest' or 'gptq'"),
        ({"version": True}, r"recipe version True is not supported"),
    ],
)
def test_bad_fields_are_refused_with_their_name(change: dict[str, object], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict({**GOOD, **change})


def test_quoted_false_does_not_skip_and_real_booleans_work() -> None:
    recipe = Recipe.from_dict({**GOOD, "rules": [{"match": "a", "skip": False}]})
    assert recipe.resolve(["a"])["a"] is not None
    assert Recipe.from_dict({**GOOD, "rules": [{"match": 0, "skip": True}]}).rules[0].match == "0"


def test_python_constructors_check_the_same_fields() -> None:
    with pytest.raises(SchemeError, match=r"act_bits must be 0 .* got '8'"):
        Recipe.preset("rmsmp", act_bits="8")  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="skip must be a boolean"):
        Rule("x", skip="false")  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="act_signed must be a boolean"):
        LayerConfig("fixed-4", act_signed="yes")  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="fold_bn must be a boolean"):
        Recipe(LayerConfig("fixed-4"), fold_bn="no")  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="rules must be Rule values"):
        Recipe(LayerConfig("fixed-4"), ({"match": "x"},))  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="unknown row scorer 'hessian'"):
        Recipe(LayerConfig("fixed-4"), row_scorer="hessian")


def test_recipe_act_bits_range_is_the_quantizer_s() -> None:
    assert ACT_BITS_RANGE == LAYER_ACT_BITS_RANGE


def test_binary_and_unreadable_recipe_files_are_recipe_errors(tmp_path: Path) -> None:
    binary = tmp_path / "r.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(RecipeError, match="not UTF-8 text"):
        Recipe.load(binary)
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(RecipeError, match="recipe file not found"):
        Recipe.load(folder)


def _reversed_rows(name: str, w_rows: torch.Tensor, ratio: object) -> np.ndarray:
    del name, ratio
    return np.arange(w_rows.shape[0], dtype=float)


def test_a_registered_row_scorer_is_saveable_and_used(tmp_path: Path) -> None:
    register_row_scorer("test-reversed-rows", _reversed_rows, replace=True)
    recipe = Recipe(LayerConfig("fixed-8:0.5,fixed-4:0.5"), row_scorer="test-reversed-rows")
    path = tmp_path / "r.yaml"
    recipe.save(path)
    assert Recipe.load(path) == recipe
    torch.manual_seed(0)
    q = mixq.quantize(nn.Sequential(nn.Linear(8, 4)), path, progress=False)
    assignment = q[0].assignment
    bits = [assignment.candidates[int(c)].bits for c in assignment.codes]
    assert bits == [4, 4, 8, 8]  # the scorer ranks the last rows highest
    with pytest.raises(RecipeError, match="already registered"):
        register_row_scorer("magnitude", _reversed_rows, replace=True)
    with pytest.raises(RecipeError, match="must be callable"):
        register_row_scorer("x-not-callable", 3)  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="non-empty word"):
        register_row_scorer("has space", _reversed_rows)
