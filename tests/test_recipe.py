"""Recipes: presets, rule resolution, and the YAML/JSON round trip."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from mixq.errors import RecipeError
from mixq.ratio import Ratio
from mixq.recipe import PRESET_RATIOS, LayerConfig, Recipe, Rule

NAMES = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "linear"]


def test_presets() -> None:
    assert set(PRESET_RATIOS) == {"fixed4", "pot4", "sp2-4", "fixed8", "msp", "rmsmp"}
    r = Recipe.preset("rmsmp")
    assert str(r.default.ratio) == "sp2-4:0.6,fixed-4:0.35,fixed-8:0.05"
    assert r.default.act_bits == 8
    assert [(rule.match, str(rule.ratio), rule.act_bits) for rule in r.rules] == [
        ("@first", "fixed-8:1", 8),
        ("@last", "fixed-8:1", 8),
    ]
    assert Recipe.preset("msp", first_last=None).rules == ()
    low = Recipe.preset("fixed4", act_bits=4, first_last="fixed-6", scheme_rule="error")
    assert low.default.act_bits == 4 and low.scheme_rule == "error"
    assert [(str(rule.ratio), rule.act_bits) for rule in low.rules] == [("fixed-6:1", 8)] * 2
    assert [rule.act_bits for rule in Recipe.preset("fixed4", act_bits=0).rules] == [0, 0]


def test_resolve_first_last_and_default() -> None:
    configs = Recipe.preset("msp").resolve(NAMES)
    assert list(configs) == NAMES
    assert str(configs["conv1"].ratio) == "fixed-8:1"
    assert str(configs["linear"].ratio) == "fixed-8:1"
    for name in NAMES[1:-1]:
        assert configs[name] == LayerConfig(Ratio.parse("sp2-4:0.5,fixed-4:0.5"), act_bits=8)


def test_rules_apply_in_order_and_later_rules_win() -> None:
    recipe = Recipe(
        LayerConfig(Ratio.parse("fixed-4"), act_bits=6),
        (
            Rule("re:layer1\\..*", ratio=Ratio.parse("pot-4"), act_signed=True),
            Rule("layer1.0.conv2", ratio=Ratio.parse("sp2-5")),
            Rule("@last", skip=True),
            Rule("re:.*conv1", act_bits=0),
        ),
    )
    configs = recipe.resolve(NAMES)
    assert configs["conv1"] == LayerConfig(Ratio.parse("fixed-4"), act_bits=0)
    assert configs["layer1.0.conv1"] == LayerConfig(Ratio.parse("pot-4"), 0, True)
    assert configs["layer1.0.conv2"] == LayerConfig(Ratio.parse("sp2-5"), 6, True)
    assert configs["layer2.0.conv1"] == LayerConfig(Ratio.parse("fixed-4"), act_bits=0)
    assert configs["linear"] is None


def test_regex_is_a_full_match() -> None:
    rule = Rule("re:layer1")
    assert not rule.matches("layer1.0.conv1", 1, 5)
    assert rule.matches("layer1", 1, 5)
    assert Rule("@first").matches("x", 0, 3) and not Rule("@first").matches("x", 1, 3)
    assert Rule("@last").matches("x", 2, 3) and not Rule("@last").matches("x", 1, 3)


def test_unused_rules() -> None:
    recipe = Recipe(
        LayerConfig(Ratio.parse("fixed-4")),
        (Rule("conv1"), Rule("conv9"), Rule("re:fc.*"), Rule("@last")),
    )
    assert [r.match for r in recipe.unused_rules(NAMES)] == ["conv9", "re:fc.*"]
    assert [r.match for r in recipe.unused_rules([])] == ["conv1", "conv9", "re:fc.*", "@last"]


def _full_recipe() -> Recipe:
    return Recipe(
        LayerConfig(
            Ratio.parse("sp2-4:0.6,fixed-4:0.35,fixed-8:0.05"), act_bits=4, act_signed=False
        ),
        (
            Rule("@first", ratio=Ratio.parse("fixed-8"), act_bits=8),
            Rule(
                "re:layer3\\..*",
                ratio=Ratio.parse({"pot-4": 0.25, "fixed-6": 0.75}),
                act_signed=True,
            ),
            Rule("linear", skip=True),
        ),
        scheme_rule="error",
        row_scorer="magnitude",
        scale_method="max",
        act_method="percentile",
        fold_bn=False,
    )


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".recipe"])
def test_save_load_round_trip(tmp_path: Path, suffix: str) -> None:
    recipe = _full_recipe()
    path = tmp_path / f"r{suffix}"
    recipe.save(path)
    assert Recipe.load(path) == recipe
    text = path.read_text()
    data = yaml.safe_load(text) if suffix in (".yaml", ".yml") else json.loads(text)
    assert data == recipe.to_dict()
    assert data["default"]["ratio"] == {"sp2-4": 0.6, "fixed-4": 0.35, "fixed-8": 0.05}
    assert data["rules"][2] == {"match": "linear", "skip": True}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_preset_round_trip_and_coerce(tmp_path: Path) -> None:
    for name in PRESET_RATIOS:
        recipe = Recipe.preset(name)
        assert Recipe.from_dict(recipe.to_dict()) == recipe
        assert Recipe.coerce(name) == recipe
    recipe = _full_recipe()
    assert Recipe.coerce(recipe) is recipe
    assert Recipe.coerce(recipe.to_dict()) == recipe
    path = tmp_path / "r.json"
    recipe.save(path)
    assert Recipe.coerce(path) == recipe
    assert Recipe.coerce(str(path)) == recipe


def test_hand_written_yaml(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "default:\n"
        "  ratio: sp2-4:0.5, fixed-4:0.5\n"
        "rules:\n"
        "  - match: '@first'\n"
        "    ratio: fixed-8\n"
        "  - {match: 're:.*fc', skip: true}\n"
    )
    recipe = Recipe.load(path)
    assert recipe.default == LayerConfig(Ratio.parse("sp2-4:0.5,fixed-4:0.5"))
    assert recipe.rules == (Rule("@first", ratio=Ratio.parse("fixed-8")), Rule("re:.*fc", True))
    assert recipe.scheme_rule == "variance" and recipe.fold_bn is True


def test_recipe_is_immutable_and_hashable_by_value() -> None:
    recipe = Recipe.preset("rmsmp")
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.fold_bn = False  # type: ignore[misc]
    assert recipe == Recipe.preset("rmsmp")
    assert recipe != Recipe.preset("rmsmp", first_last=None)


def test_unknown_keys_and_values() -> None:
    good = Recipe.preset("msp").to_dict()
    with pytest.raises(RecipeError, match=r"unknown recipe key\(s\) \['ratios'\]"):
        Recipe.from_dict({**good, "ratios": {}})
    with pytest.raises(RecipeError, match=r"unknown default key\(s\) \['bits'\]"):
        Recipe.from_dict({**good, "default": {"ratio": "fixed-4", "bits": 4}})
    with pytest.raises(RecipeError, match=r"unknown rule key\(s\) \['name'\]"):
        Recipe.from_dict({**good, "rules": [{"match": "x", "name": "y"}]})
    with pytest.raises(RecipeError, match="has no 'default'"):
        Recipe.from_dict({"rules": []})
    with pytest.raises(RecipeError, match="'default' has no 'ratio'"):
        Recipe.from_dict({"default": {"act_bits": 8}})
    with pytest.raises(RecipeError, match="needs a 'match'"):
        Recipe.from_dict({**good, "rules": [{"skip": True}]})
    with pytest.raises(RecipeError, match="'rules' must be a list"):
        Recipe.from_dict({**good, "rules": 5})
    with pytest.raises(RecipeError, match="a recipe must be a mapping, got list"):
        Recipe.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match="scheme_rule must be 'variance' or 'error'"):
        Recipe.from_dict({**good, "scheme_rule": "random"})
    with pytest.raises(RecipeError, match="scale_method must be 'max' or 'mse'"):
        Recipe.from_dict({**good, "scale_method": "p99"})
    with pytest.raises(RecipeError, match="act_method must be 'mse' or 'percentile'"):
        Recipe.from_dict({**good, "act_method": "max"})
    with pytest.raises(RecipeError, match="recipe version 2 is not supported"):
        Recipe.from_dict({**good, "version": 2})
    with pytest.raises(RecipeError, match=r"invalid recipe: .*fixed supports 2\.\.8 bits, got 9"):
        Recipe.from_dict({**good, "default": {"ratio": "fixed-9"}})
    with pytest.raises(RecipeError, match=r"invalid recipe: ratio shares must sum to 1, got 0\.9"):
        Recipe.from_dict({**good, "rules": [{"match": "x", "ratio": "fixed-4:0.9"}]})
    with pytest.raises(RecipeError, match=r"invalid recipe: act_bits must be 0 .* got 1"):
        Recipe.from_dict({**good, "default": {"ratio": "fixed-4", "act_bits": 1}})
    with pytest.raises(RecipeError, match="only @first and @last"):
        Rule("@middle")
    with pytest.raises(RecipeError, match="invalid regex"):
        Rule("re:(")


def test_unknown_presets_and_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="unknown preset 'rmsmp2'; presets: fixed4, pot4"):
        Recipe.preset("rmsmp2")
    with pytest.raises(RecipeError, match="unknown recipe 'int8'"):
        Recipe.coerce("int8")
    with pytest.raises(RecipeError, match="recipe file not found"):
        Recipe.load(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="recipe file not found"):
        Recipe.coerce(tmp_path / "missing.json")
    bad = tmp_path / "bad.yaml"
    bad.write_text("default: [unclosed\n")
    with pytest.raises(RecipeError, match="cannot parse recipe file"):
        Recipe.load(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(RecipeError, match="a recipe must be a mapping, got str"):
        Recipe.load(scalar)


def test_skip_wins_over_later_rules_and_earlier_overrides_survive_elsewhere() -> None:
    recipe = Recipe(
        LayerConfig(Ratio.parse("fixed-4")),
        (
            Rule("re:.*", ratio=Ratio.parse("pot-4")),
            Rule("b", skip=True),
            Rule("re:[ab]", act_bits=4),
        ),
    )
    configs = recipe.resolve(["a", "b", "c"])
    assert configs["b"] is None
    assert configs["a"] == LayerConfig(Ratio.parse("pot-4"), act_bits=4)
    assert configs["c"] == LayerConfig(Ratio.parse("pot-4"), act_bits=8)
