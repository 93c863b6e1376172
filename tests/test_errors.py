"""Every bad input ends in a typed error (or warning) whose message names the problem."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mixq
from mixq.checkpoint import checksum as checkpoint_checksum
from mixq.errors import (
    CalibrationError,
    CheckpointError,
    DataError,
    MixqError,
    NonFiniteWeightError,
    NoQuantizableLayerError,
    RatioError,
    RecipeError,
    SchemeError,
    UnsupportedLayerError,
    UnusedRuleWarning,
)
from mixq.models import resnet20, resnet32
from mixq.ratio import Ratio
from mixq.recipe import LayerConfig, Recipe, Rule
from mixq.schemes import Candidate, Scheme, parse_scheme

# Cheap initialisation: these tests are about errors, not about accuracy.
FAST = {"scale_method": "max", "row_scorer": "magnitude"}


def _recipe(ratio: str = "fixed-4", *rules: Rule) -> Recipe:
    return Recipe(LayerConfig(Ratio.parse(ratio)), rules, **FAST)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_error_hierarchy() -> None:
    for error in (
        SchemeError,
        RatioError,
        RecipeError,
        NoQuantizableLayerError,
        NonFiniteWeightError,
        CalibrationError,
    ):
        assert issubclass(error, MixqError) and issubclass(error, ValueError)
    assert issubclass(UnsupportedLayerError, MixqError)
    assert issubclass(UnsupportedLayerError, TypeError)
    assert issubclass(CheckpointError, MixqError) and issubclass(DataError, MixqError)
    assert issubclass(UnusedRuleWarning, UserWarning)


# -- ratios ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "total"),
    [
        ("fixed-4:0.5,sp2-4:0.4", "0.9"),
        ("fixed-4:0.7,sp2-4:0.5", "1.2"),
        ({"fixed-8": 0.3}, "0.3"),
        ("sp2-4:0.6,fixed-4:0.35,fixed-8:0.06", "1.01"),
    ],
)
def test_ratio_not_summing_to_one(spec: Any, total: str) -> None:
    with pytest.raises(RatioError, match=rf"must sum to 1, got {total} \("):
        Ratio.parse(spec)


def test_ratio_bad_shares() -> None:
    with pytest.raises(RatioError, match=r"share of fixed-4 must be >= 0, got -0\.5"):
        Ratio.parse({"fixed-4": -0.5, "sp2-4": 1.5})
    with pytest.raises(RatioError, match="share of fixed-4 must be >= 0, got nan"):
        Ratio.parse({"fixed-4": float("nan"), "sp2-4": 1.0})
    with pytest.raises(RatioError, match="share of fixed-4 is not a number: 'half'"):
        Ratio.parse("fixed-4:half,sp2-4:0.5")
    with pytest.raises(RatioError, match="candidate fixed-4 appears twice"):
        Ratio.parse("fixed-4:0.5,fixed4:0.5")
    with pytest.raises(RatioError, match="at least one candidate"):
        Ratio.parse(" , ")
    with pytest.raises(RatioError, match="cannot read a ratio from int"):
        Ratio.parse(4)  # type: ignore[arg-type]


# -- schemes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sp2-2", "sp2 supports 3..8 bits, got 2"),
        ("fixed-9", "fixed supports 2..8 bits, got 9"),
        ("pot-1", "pot supports 2..8 bits, got 1"),
        ("fixed-0", "fixed supports 2..8 bits, got 0"),
        ("sp2-16", "sp2 supports 3..8 bits, got 16"),
    ],
)
def test_bits_out_of_range(text: str, message: str) -> None:
    with pytest.raises(SchemeError, match=message):
        Candidate.parse(text)
    with pytest.raises(SchemeError, match=message):
        Ratio.parse(f"{text}:1")


def test_unknown_schemes() -> None:
    assert Candidate.parse("fixed-4") == Candidate(Scheme.FIXED, 4)
    for text in ("int-4", "float-8", "sp3-4", "fixed", "4", ""):
        with pytest.raises(SchemeError, match=f"cannot parse candidate '{text}'"):
            Candidate.parse(text)
    with pytest.raises(SchemeError, match="unknown scheme 'int'; known schemes: fixed, pot, sp2"):
        parse_scheme("int")
    with pytest.raises(SchemeError, match="unknown scheme 'int'"):
        Candidate("int", 4)  # type: ignore[arg-type]
    for bits in (4.0, "4", True):
        with pytest.raises(SchemeError, match="bits must be an integer"):
            Candidate(Scheme.FIXED, bits)  # type: ignore[arg-type]
    with pytest.raises(SchemeError, match="int-4"):
        Ratio.parse("sp2-4:0.5,int-4:0.5")
    # Inside a recipe the same mistakes become RecipeErrors that quote the cause.
    with pytest.raises(RecipeError, match="invalid recipe: cannot parse candidate 'int-4'"):
        mixq.quantize(_mlp(), {"default": {"ratio": "int-4"}}, progress=False)


def test_bad_act_bits() -> None:
    for bits in (1, 17, -1, 4.5, True):
        with pytest.raises(SchemeError, match="act_bits must be 0"):
            LayerConfig(Ratio.parse("fixed-4"), act_bits=bits)  # type: ignore[arg-type]
        with pytest.raises(SchemeError, match="act_bits must be 0"):
            Rule("x", act_bits=bits)  # type: ignore[arg-type]


# -- models and recipes ----------------------------------------------------------------------


def test_model_without_quantisable_layers() -> None:
    with pytest.raises(NoQuantizableLayerError, match=r"\(0 Conv2d/Linear layers found"):
        mixq.quantize(nn.Sequential(nn.ReLU(), nn.Flatten()), _recipe(), progress=False)
    everything_skipped = _recipe("fixed-4", Rule("re:.*", skip=True))
    with pytest.raises(NoQuantizableLayerError, match=r"\(2 Conv2d/Linear layers found"):
        mixq.quantize(_mlp(), everything_skipped, progress=False)
    already = mixq.quantize(_mlp(), _recipe(), progress=False)
    with pytest.raises(NoQuantizableLayerError):
        mixq.quantize(already, _recipe(), progress=False)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (
            lambda m: m[2].weight.data.__setitem__((0, 0), float("nan")),
            "layer '2': weight contains NaN or Inf",
        ),
        (
            lambda m: m[0].bias.data.__setitem__(3, float("inf")),
            "layer '0': bias contains NaN or Inf",
        ),
    ],
)
def test_non_finite_weights(corrupt: Callable[[nn.Module], None], message: str) -> None:
    model = _mlp()
    corrupt(model)
    with pytest.raises(NonFiniteWeightError, match=message):
        mixq.quantize(model, _recipe(), progress=False)


def test_non_finite_folded_bn_names_the_layer() -> None:
    model = resnet20().eval()
    model.layer2[1].bn2.running_var[5] = float("nan")
    with pytest.raises(
        NonFiniteWeightError, match=r"layer 'layer2\.1\.conv2': bn\.running_var contains NaN"
    ):
        mixq.quantize(model, _recipe(), progress=False)


def test_unused_rule_warns() -> None:
    recipe = _recipe(
        "fixed-4",
        Rule("0", ratio=Ratio.parse("fixed-8")),
        Rule("fc9"),
        Rule("re:layer.*", skip=True),
    )
    with pytest.warns(UnusedRuleWarning) as record:
        q = mixq.quantize(_mlp(), recipe, progress=False)
    messages = sorted(str(w.message) for w in record if w.category is UnusedRuleWarning)
    assert messages == [
        "recipe rule 'fc9' matches no quantisable layer",
        "recipe rule 're:layer.*' matches no quantisable layer",
    ]
    assert mixq.describe(q).layers[0].counts == {"fixed-8": 8}  # the rule that matched applied
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnusedRuleWarning)
        mixq.quantize(_mlp(), _recipe("fixed-4", Rule("@last", skip=True)), progress=False)


def test_rule_on_an_unsupported_module() -> None:
    with pytest.raises(UnsupportedLayerError, match="rule '1' targets a ReLU"):
        mixq.quantize(
            _mlp(), _recipe("fixed-4", Rule("1", ratio=Ratio.parse("fixed-8"))), progress=False
        )
    with pytest.raises(UnsupportedLayerError, match=r"rule 'layer1\.0\.bn1' targets a BatchNorm2d"):
        mixq.quantize(resnet20(), _recipe("fixed-4", Rule("layer1.0.bn1")), progress=False)
    # Skipping such a module is harmless: it matches no quantisable layer.
    with pytest.warns(UnusedRuleWarning, match="'1' matches no quantisable layer"):
        mixq.quantize(_mlp(), _recipe("fixed-4", Rule("1", skip=True)), progress=False)


def test_unknown_presets_and_recipe_keys(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="unknown preset 'rmsmp8'"):
        Recipe.preset("rmsmp8")
    with pytest.raises(RecipeError, match="unknown recipe 'rmsmp8': give a preset"):
        mixq.quantize(_mlp(), "rmsmp8", progress=False)
    with pytest.raises(RecipeError, match=r"unknown recipe key\(s\) \['ratio'\]"):
        mixq.quantize(_mlp(), {"ratio": "fixed-4", "default": {"ratio": "fixed-4"}}, progress=False)
    path = tmp_path / "r.yaml"
    path.write_text("default:\n  ratio: fixed-4\n  precision: 4\n")
    with pytest.raises(RecipeError, match=r"unknown default key\(s\) \['precision'\]"):
        mixq.quantize(_mlp(), path, progress=False)
    with pytest.raises(RecipeError, match="unknown row scorer 'hessian'"):
        mixq.quantize(
            _mlp(),
            Recipe(LayerConfig(Ratio.parse("sp2-4:0.5,fixed-4:0.5")), row_scorer="hessian"),
            progress=False,
        )


# -- calibration -------------------------------------------------------------------------------


def test_empty_calibration_loader() -> None:
    empty = DataLoader(TensorDataset(torch.empty(0, 6)), batch_size=4)
    with pytest.raises(CalibrationError, match="no batches"):
        mixq.quantize(_mlp(), _recipe(), calibration_data=empty, progress=False)
    with pytest.raises(CalibrationError, match="no batches"):
        mixq.quantize(_mlp(), _recipe(), calibration_data=[], progress=False)
    q = mixq.quantize(_mlp(), _recipe(), progress=False)
    with pytest.raises(CalibrationError, match="no batches"):
        mixq.calibrate(q, empty, progress=False)
    with pytest.raises(CalibrationError, match="not calibrated"):
        q(torch.randn(2, 6))


# -- checkpoints -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    torch.manual_seed(0)
    q = mixq.quantize(model, Recipe.preset("msp", first_last=None), progress=False)
    path = tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"
    mixq.save_quantized(q, path)
    return path, path.read_bytes()


def _split(raw: bytes) -> tuple[dict[str, Any], bytes]:
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def _join(outer: dict[str, Any], data: bytes) -> bytes:
    text = json.dumps(outer).encode()
    return len(text).to_bytes(8, "little") + text + data


def _edit_header(raw: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The file with its header edited and its checksum recomputed: an edit made on
    purpose, which the header checks (not the checksum) must catch."""
    outer, data = _split(raw)
    header = json.loads(outer["__metadata__"]["mixq"])
    edit(header)
    if "checksum" in header:
        header["checksum"] = checkpoint_checksum(header, safetensors.torch.load(raw))
    outer["__metadata__"]["mixq"] = json.dumps(header)
    return _join(outer, data)


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(header: dict[str, Any]) -> None:
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


def _corruptions(raw: bytes) -> dict[str, tuple[bytes, str]]:
    outer, data = _split(raw)
    no_mixq = dict(outer)
    no_mixq["__metadata__"] = {}
    codes = outer["2.weight_quant.row_codes"]["data_offsets"]
    bad_codes = bytearray(data)
    bad_codes[codes[0] : codes[0] + 8] = (7).to_bytes(8, "little")
    invalid_json = dict(outer)
    invalid_json["__metadata__"] = {"mixq": "{not json"}
    return {
        "random bytes": (os.urandom(4096), "is not a readable safetensors file"),
        "empty": (b"", "is not a readable safetensors file"),
        "truncated half": (raw[: len(raw) // 2], "is not a readable safetensors file"),
        "truncated tail": (raw[:-4], "is not a readable safetensors file"),
        "other format": (
            _edit_header(raw, _set(["format"], "something-else")),
            "unknown format 'something-else'",
        ),
        "newer version": (
            _edit_header(raw, _set(["version"], 99)),
            "format version 99 is not supported",
        ),
        "header not json": (_join(invalid_json, data), "header is not valid JSON"),
        "no mixq header": (_join(no_mixq, data), "is not a mixq quantised model"),
        "bad candidate": (
            _edit_header(raw, _set(["layers", 0, "candidates"], ["fixed-9"])),
            "fixed supports 2..8 bits, got 9",
        ),
        "missing layer": (
            _edit_header(raw, _set(["layers", 1, "name"], "9")),
            "does not fit the model",
        ),
        "wrong kind": (
            _edit_header(raw, _set(["layers", 0, "kind"], "conv2d")),
            "layer '0' is a Linear in the model but conv2d in the checkpoint",
        ),
        "row codes": (_join(outer, bytes(bad_codes)), "checksum does not match its contents"),
        "row codes rehashed": (
            _edit_header(_join(outer, bytes(bad_codes)), lambda header: None),
            "does not match the model",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "random bytes",
        "empty",
        "truncated half",
        "truncated tail",
        "other format",
        "newer version",
        "header not json",
        "no mixq header",
        "bad candidate",
        "missing layer",
        "wrong kind",
        "row codes",
        "row codes rehashed",
    ],
)
def test_corrupt_checkpoint(saved_mlp: tuple[Path, bytes], tmp_path: Path, case: str) -> None:
    _, raw = saved_mlp
    content, message = _corruptions(raw)[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        mixq.load_quantized(_mlp(), path)


def test_unedited_copy_loads(saved_mlp: tuple[Path, bytes], tmp_path: Path) -> None:
    # The editing helpers themselves keep a file valid.
    _, raw = saved_mlp
    path = tmp_path / "copy.safetensors"
    path.write_bytes(_edit_header(raw, lambda header: None))
    assert isinstance(mixq.load_quantized(_mlp(), path)[0], mixq.QuantLinear)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint not found: .*nothing\.safetensors"):
        mixq.load_quantized(_mlp(), tmp_path / "nothing.safetensors")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        mixq.load_quantized(_mlp(), tmp_path)  # a folder


def test_checkpoint_for_another_architecture(saved_mlp: tuple[Path, bytes], tmp_path: Path) -> None:
    path, _ = saved_mlp
    with pytest.raises(CheckpointError, match=r"size mismatch for 2\.weight"):
        mixq.load_quantized(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5)), path)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        mixq.load_quantized(resnet20(), path)
    r20 = tmp_path / "r20.safetensors"
    mixq.save_quantized(mixq.quantize(resnet20(), _recipe(), progress=False), r20)
    with pytest.raises(CheckpointError, match=r"(?s)does not match the model: .*Missing key"):
        mixq.load_quantized(resnet32(), r20)
    with pytest.raises(CheckpointError, match=r"layer entry .*'conv1'.* does not fit the model"):
        mixq.load_quantized(_mlp(), r20)
