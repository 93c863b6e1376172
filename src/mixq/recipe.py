"""Recipes: what each layer becomes. A default plus rules matched by module name.

A rule's ``match`` is an exact module name, ``re:<regex>`` (full match on the name),
``@first`` or ``@last`` (the first or last quantisable layer in module order). Every rule
that matches a layer applies, in the order written; the fields a rule sets override what
came before, so a later rule wins. ``skip: true`` leaves the layer in float whatever
other rules say.

``act_bits: 0`` leaves a layer's input activation in float.

Every field is checked when a :class:`LayerConfig`, :class:`Rule` or :class:`Recipe` is
built, from Python or from a file: booleans must be booleans (``skip: "false"`` is refused,
not read as true), names must be known, and a bad value raises :class:`RecipeError` (or
:class:`SchemeError` for bits) naming the field. This module needs no torch.

A custom row scorer is registered under a name, so that a recipe naming it stays a plain
value that saves to YAML or JSON:

>>> import numpy as np
>>> from mixq.scoring import register_row_scorer
>>> def last_rows_first(name, w_rows, ratio):
...     return np.arange(w_rows.shape[0], dtype=float)
>>> register_row_scorer("last-rows-first", last_rows_first)
>>> Recipe.preset("msp").with_row_scorer("last-rows-first").to_dict()["row_scorer"]
'last-rows-first'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from mixq.errors import RatioError, RecipeError, SchemeError
from mixq.ratio import Ratio
from mixq.textfile import read_text

if TYPE_CHECKING:  # type names only: importing these modules would pull in torch and scipy
    from mixq.allocation.rows import SchemeRule
    from mixq.nn.act_quant import CalibrationMethod
    from mixq.scale_init import ScaleMethod

RECIPE_VERSION = 1

# The activation quantiser's bit range (mixq.nn.act_quant.ACT_BITS_RANGE; a test keeps the
# two equal). Held here as a plain constant so that recipes stay torch-free.
ACT_BITS_RANGE = (2, 16)
SCHEME_RULES = ("variance", "error")
SCALE_METHODS = ("max", "mse")
ACT_METHODS = ("mse", "percentile")
WEIGHT_ROUNDINGS = ("nearest", "gptq")
BUILTIN_ROW_SCORERS = ("magnitude", "perturbation")  # mixq.scoring.SCORERS at import

WeightRounding = Literal["nearest", "gptq"]

PRESET_RATIOS: dict[str, str] = {
    "fixed4": "fixed-4",
    "pot4": "pot-4",
    "sp2-4": "sp2-4",
    "fixed8": "fixed-8",
    "msp": "sp2-4:0.5,fixed-4:0.5",
    "rmsmp": "sp2-4:0.6,fixed-4:0.35,fixed-8:0.05",
}


def row_scorer_names() -> tuple[str, ...]:
    """The names a recipe's ``row_scorer`` may take: the built-ins and the registered ones."""
    import sys

    scoring = sys.modules.get("mixq.scoring")  # nothing registered before it is imported
    registered = tuple(getattr(scoring, "SCORERS", {}))
    return BUILTIN_ROW_SCORERS + tuple(n for n in registered if n not in BUILTIN_ROW_SCORERS)


def _check_choice(value: object, field_name: str, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        options = " or ".join(repr(c) for c in choices)
        raise RecipeError(f"{field_name} must be {options}, got {value!r}")


def _check_bool(value: object, field_name: str, *, optional: bool = False) -> None:
    if isinstance(value, bool) or (optional and value is None):
        return
    allowed = "true, false or null" if optional else "true or false"
    raise RecipeError(
        f"{field_name} must be a boolean ({allowed}, unquoted), got {value!r} "
        f"({type(value).__name__})"
    )


def _check_ratio(value: object, field_name: str) -> Ratio:
    if not isinstance(value, Ratio | str | Mapping):
        raise RecipeError(
            f"{field_name} must be a ratio such as 'sp2-4:0.5,fixed-4:0.5' or a mapping of "
            f"candidate to share, got {value!r}"
        )
    return Ratio.parse(value)


def _check_act_bits(bits: int) -> int:
    low, high = ACT_BITS_RANGE
    if (
        isinstance(bits, bool)
        or not isinstance(bits, int)
        or not (bits == 0 or low <= bits <= high)
    ):
        raise SchemeError(
            f"act_bits must be 0 (float) or an integer in {low}..{high}, got {bits!r}"
        )
    return bits


@dataclass(frozen=True)
class LayerConfig:
    """How one layer is quantised."""

    ratio: Ratio  # shares of (scheme, bits) among the layer's rows
    act_bits: int = 8  # bits of the layer's input; 0 keeps it in float
    act_signed: bool | None = None  # None: decided by calibration (negative values seen)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratio", _check_ratio(self.ratio, "ratio"))
        _check_act_bits(self.act_bits)
        _check_bool(self.act_signed, "act_signed", optional=True)


@dataclass(frozen=True)
class Rule:
    """Overrides for the layers that ``match`` selects (see the module docstring)."""

    match: str
    skip: bool = False
    ratio: Ratio | None = None
    act_bits: int | None = None
    act_signed: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.match, int) and not isinstance(self.match, bool):
            object.__setattr__(self, "match", str(self.match))  # nn.Sequential names: 0, 1, ...
        if not isinstance(self.match, str) or not self.match:
            raise RecipeError(f"a rule's match must be a non-empty string, got {self.match!r}")
        _check_bool(self.skip, f"rule {self.match!r}: skip")
        if self.ratio is not None:
            object.__setattr__(self, "ratio", _check_ratio(self.ratio, f"rule {self.match!r}"))
        if self.act_bits is not None:
            _check_act_bits(self.act_bits)
        _check_bool(self.act_signed, f"rule {self.match!r}: act_signed", optional=True)
        if self.match.startswith("re:"):
            try:
                re.compile(self.match[3:])
            except re.error as exc:
                raise RecipeError(f"rule {self.match!r}: invalid regex: {exc}") from None
        elif self.match.startswith("@") and self.match not in ("@first", "@last"):
            raise RecipeError(f"rule {self.match!r}: only @first and @last are known")

    def matches(self, name: str, position: int, count: int) -> bool:
        if self.match == "@first":
            return position == 0
        if self.match == "@last":
            return position == count - 1
        if self.match.startswith("re:"):
            return re.fullmatch(self.match[3:], name) is not None
        return self.match == name

    def apply(self, config: LayerConfig) -> LayerConfig:
        changes: dict[str, Any] = {}
        if self.ratio is not None:
            changes["ratio"] = self.ratio
        if self.act_bits is not None:
            changes["act_bits"] = self.act_bits
        if self.act_signed is not None:
            changes["act_signed"] = self.act_signed
        return replace(config, **changes)


@dataclass(frozen=True)
class Recipe:
    """Everything :func:`mixq.quantize` needs to know, as one value that round-trips to JSON.

    >>> r = Recipe.preset("rmsmp")
    >>> str(r.default.ratio), [rule.match for rule in r.rules]
    ('sp2-4:0.6,fixed-4:0.35,fixed-8:0.05', ['@first', '@last'])
    >>> Recipe.from_dict(r.to_dict()) == r
    True
    """

    default: LayerConfig
    rules: tuple[Rule, ...] = ()
    scheme_rule: SchemeRule = "variance"  # how rows of equal bits pick a scheme
    row_scorer: str = "perturbation"  # which rows keep the higher precision
    scale_method: ScaleMethod = "max"  # per-row clip initialisation (see README: PTQ)
    act_method: CalibrationMethod = "mse"  # activation clip calibration
    fold_bn: bool = True  # fold BatchNorm into the preceding conv
    weight_rounding: WeightRounding = "gptq"  # "nearest", or error feedback with data
    version: int = field(default=RECIPE_VERSION)

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or self.version != RECIPE_VERSION:
            raise RecipeError(
                f"recipe version {self.version!r} is not supported ({RECIPE_VERSION})"
            )
        if not isinstance(self.default, LayerConfig):
            raise RecipeError(f"default must be a LayerConfig, got {type(self.default).__name__}")
        if isinstance(self.rules, str | bytes) or not isinstance(self.rules, Sequence):
            raise RecipeError(f"rules must be a sequence of Rule, got {self.rules!r}")
        object.__setattr__(self, "rules", tuple(self.rules))
        bad = [r for r in self.rules if not isinstance(r, Rule)]
        if bad:
            raise RecipeError(f"rules must be Rule values, got {bad[0]!r}")
        _check_choice(self.scheme_rule, "scheme_rule", SCHEME_RULES)
        _check_choice(self.scale_method, "scale_method", SCALE_METHODS)
        _check_choice(self.act_method, "act_method", ACT_METHODS)
        _check_choice(self.weight_rounding, "weight_rounding", WEIGHT_ROUNDINGS)
        _check_bool(self.fold_bn, "fold_bn")
        if not isinstance(self.row_scorer, str) or self.row_scorer not in row_scorer_names():
            raise RecipeError(
                f"unknown row scorer {self.row_scorer!r}; known: {', '.join(row_scorer_names())} "
                "(register a custom one with mixq.register_row_scorer)"
            )

    def with_row_scorer(self, name: str) -> Recipe:
        """This recipe with ``row_scorer`` set to a built-in or registered scorer name."""
        return replace(self, row_scorer=name)

    @classmethod
    def preset(
        cls,
        name: str,
        *,
        act_bits: int = 8,
        first_last: str | None = "fixed-8",
        scheme_rule: SchemeRule = "variance",
    ) -> Recipe:
        """A named preset (``fixed4``, ``pot4``, ``sp2-4``, ``fixed8``, ``msp``, ``rmsmp``).

        ``first_last`` is the candidate of the first and last layers, with 8-bit inputs
        (the usual practice: they are small and sensitive); ``None`` treats them like the rest.
        """
        if not isinstance(name, str) or name not in PRESET_RATIOS:
            raise RecipeError(f"unknown preset {name!r}; presets: {', '.join(PRESET_RATIOS)}")
        _check_act_bits(act_bits)
        if first_last is not None and not isinstance(first_last, str):
            raise RecipeError(
                f"first_last must be a candidate such as 'fixed-8', got {first_last!r}"
            )
        rules: tuple[Rule, ...] = ()
        if first_last is not None:
            edge_bits = max(act_bits, 8) if act_bits else 0
            rules = tuple(
                Rule(m, ratio=Ratio.parse(first_last), act_bits=edge_bits)
                for m in ("@first", "@last")
            )
        default = LayerConfig(Ratio.parse(PRESET_RATIOS[name]), act_bits=act_bits)
        return cls(default, rules, scheme_rule=scheme_rule)

    def resolve(self, names: Sequence[str]) -> dict[str, LayerConfig | None]:
        """Each quantisable layer's config (``None``: left in float), in order."""
        count = len(names)
        configs: dict[str, LayerConfig | None] = {}
        for position, name in enumerate(names):
            config, skipped = self.default, False
            for rule in self.rules:
                if rule.matches(name, position, count):
                    skipped = skipped or rule.skip
                    config = rule.apply(config)
            configs[name] = None if skipped else config
        return configs

    def unused_rules(self, names: Sequence[str]) -> list[Rule]:
        count = len(names)
        return [
            rule
            for rule in self.rules
            if not any(rule.matches(n, i, count) for i, n in enumerate(names))
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "default": _config_to_dict(self.default),
            "rules": [_rule_to_dict(rule) for rule in self.rules],
            "scheme_rule": self.scheme_rule,
            "row_scorer": self.row_scorer,
            "scale_method": self.scale_method,
            "act_method": self.act_method,
            "fold_bn": self.fold_bn,
            "weight_rounding": self.weight_rounding,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        if not isinstance(data, Mapping):
            raise RecipeError(f"a recipe must be a mapping, got {type(data).__name__}")
        known = {
            "version",
            "default",
            "rules",
            "scheme_rule",
            "row_scorer",
            "scale_method",
            "act_method",
            "fold_bn",
            "weight_rounding",
        }
        _reject_unknown(data, known, "recipe")
        if "default" not in data:
            raise RecipeError("recipe has no 'default' entry")
        if not isinstance(data.get("rules") or [], list | tuple):
            raise RecipeError(f"'rules' must be a list of rules, got {data['rules']!r}")
        try:
            return cls(
                default=_config_from_dict(data["default"]),
                rules=tuple(_rule_from_dict(r) for r in data.get("rules", []) or []),
                **{k: data[k] for k in known - {"default", "rules"} if k in data},
            )
        except (RatioError, SchemeError) as exc:
            raise RecipeError(f"invalid recipe: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically."""
        from mixq.io import atomic_write_text

        path = Path(path)
        data = self.to_dict()
        if path.suffix in (".yaml", ".yml"):
            text = yaml.safe_dump(data, sort_keys=False)
        else:
            text = json.dumps(data, indent=2) + "\n"
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        text = read_text(path, "recipe file", RecipeError)
        try:
            data = yaml.safe_load(text)  # YAML is a superset of JSON; safe: no tags run
        except (yaml.YAMLError, ValueError, RecursionError) as exc:
            raise RecipeError(f"cannot parse recipe file {path}: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def coerce(cls, recipe: Recipe | str | Path | Mapping[str, Any]) -> Recipe:
        """A recipe from a preset name, a file path, a mapping, or a recipe."""
        if isinstance(recipe, Recipe):
            return recipe
        if isinstance(recipe, Mapping):
            return cls.from_dict(recipe)
        if isinstance(recipe, str) and recipe in PRESET_RATIOS:
            return cls.preset(recipe)
        if isinstance(recipe, str | Path) and Path(recipe).suffix in (".yaml", ".yml", ".json"):
            return cls.load(recipe)
        raise RecipeError(
            f"unknown recipe {recipe!r}: give a preset ({', '.join(PRESET_RATIOS)}), "
            "a .yaml/.json file, a mapping or a Recipe"
        )


def _reject_unknown(data: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise RecipeError(f"unknown {where} key(s) {unknown}; known: {sorted(known)}")


def _config_to_dict(config: LayerConfig) -> dict[str, Any]:
    return {
        "ratio": config.ratio.to_dict(),
        "act_bits": config.act_bits,
        "act_signed": config.act_signed,
    }


def _config_from_dict(data: Any) -> LayerConfig:
    if not isinstance(data, Mapping):
        raise RecipeError(f"'default' must be a mapping, got {data!r}")
    _reject_unknown(data, {"ratio", "act_bits", "act_signed"}, "default")
    if "ratio" not in data:
        raise RecipeError("recipe 'default' has no 'ratio'")
    return LayerConfig(
        _check_ratio(data["ratio"], "default ratio"),
        data.get("act_bits", 8),
        data.get("act_signed"),
    )


def _rule_to_dict(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"match": rule.match}
    if rule.skip:
        out["skip"] = True
    if rule.ratio is not None:
        out["ratio"] = rule.ratio.to_dict()
    if rule.act_bits is not None:
        out["act_bits"] = rule.act_bits
    if rule.act_signed is not None:
        out["act_signed"] = rule.act_signed
    return out


def _rule_from_dict(data: Any) -> Rule:
    if not isinstance(data, Mapping) or "match" not in data:
        raise RecipeError(f"each rule needs a 'match' entry, got {data!r}")
    _reject_unknown(data, {"match", "skip", "ratio", "act_bits", "act_signed"}, "rule")
    return Rule(
        data["match"],
        data.get("skip", False),
        data.get("ratio"),
        data.get("act_bits"),
        data.get("act_signed"),
    )
