"""Any recipe mapping or file gives a Recipe that round-trips, or a typed MixqError."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from _hostile_values import json_like, maybe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixq.errors import MixqError
from mixq.recipe import Recipe

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ratios = st.sampled_from(
    ["fixed-4", "sp2-4:0.5,fixed-4:0.5", "pot-4", "fixed-9", "fixed-4:0.9", "", "x"]
)
rule = st.fixed_dictionaries(
    {"match": maybe(st.sampled_from(["@first", "@last", "re:.*", "re:(", "conv1", "0"]))},
    optional={
        "skip": maybe(st.booleans()),
        "ratio": maybe(ratios),
        "act_bits": maybe(st.sampled_from([0, 1, 2, 4, 8, 16, 17])),
        "act_signed": maybe(st.sampled_from([None, True, False])),
    },
)
recipe_dicts = st.fixed_dictionaries(
    {"default": maybe(st.fixed_dictionaries({"ratio": maybe(ratios)}))},
    optional={
        "version": maybe(st.just(1)),
        "rules": maybe(st.lists(maybe(rule), max_size=3)),
        "scheme_rule": maybe(st.sampled_from(["variance", "error"])),
        "row_scorer": maybe(st.sampled_from(["magnitude", "perturbation"])),
        "scale_method": maybe(st.sampled_from(["max", "mse"])),
        "act_method": maybe(st.sampled_from(["mse", "percentile"])),
        "fold_bn": maybe(st.booleans()),
        "weight_rounding": maybe(st.sampled_from(["nearest", "gptq"])),
        "extra": json_like,
    },
)


def _check(data: Any) -> None:
    try:
        recipe = Recipe.from_dict(data)
    except MixqError:
        return
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    for rule in recipe.rules:
        assert isinstance(rule.skip, bool)
        assert rule.act_signed is None or isinstance(rule.act_signed, bool)
    assert isinstance(recipe.fold_bn, bool)


@SETTINGS
@given(recipe_dicts)
def test_recipe_dicts_build_or_raise_a_typed_error(data: dict[str, Any]) -> None:
    _check(data)


@SETTINGS
@given(json_like)
def test_any_json_value_builds_or_raises_a_typed_error(data: Any) -> None:
    _check(data)


@SETTINGS
@given(st.one_of(st.binary(max_size=64), recipe_dicts.map(lambda d: yaml.safe_dump(d).encode())))
def test_recipe_files_load_or_raise_a_typed_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.yaml"
        path.write_bytes(content)
        try:
            recipe = Recipe.load(path)
        except MixqError:
            return
        out = Path(folder) / "out.yaml"
        recipe.save(out)
        assert Recipe.load(out) == recipe
        assert sorted(p.name for p in Path(folder).iterdir()) == ["out.yaml", "r.yaml"]
