"""Packed integer checkpoints: bit-identical round trips, bytes at the bit width, and every
kind of damaged file refused with PackedFormatError."""

from __future__ import annotations

import json
import math
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _export_models import quantized_mobile, randomise_bn
from _strategies import ALL_CANDIDATES
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

import mixq
import mixq.export.packed as packed
from mixq.errors import CheckpointError, IntegerConversionError, PackedFormatError
from mixq.export import bits
from mixq.export.bits import pack_bits, pack_levels, packed_bytes, unpack_bits, unpack_levels
from mixq.export.packed import (
    FORMAT_NAME,
    FORMAT_VERSION,
    checksum,
    load_packed,
    packed_size,
    save_packed,
)
from mixq.grids import integer_magnitudes
from mixq.integer.compile import IntegerModel
from mixq.integer.ops import GlobalAvgPool, IntegerLayer, QuantizeInput, Requantize
from mixq.models.cifar_resnet import CifarResNet
from mixq.schemes import Candidate

ENGINES = ("reference", "int8")


# -- models -------------------------------------------------------------------------------


class _Mlp(nn.Module):
    """Reshapes its float input with tensor methods before the first quantised layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(48, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = x.reshape(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "cnn": (_cnn, (3, 12, 12)),
    "resnet": (lambda: CifarResNet(blocks_per_stage=1), (3, 32, 32)),
    "mlp": (_Mlp, (3, 4, 4)),
    "mobile": (lambda: None, (3, 16, 16)),  # quantised by quantized_mobile
}


@pytest.fixture(scope="module", params=sorted(_MODELS))
def integer_models(request: pytest.FixtureRequest) -> tuple[dict[str, IntegerModel], Tensor]:
    """The model as integers on both engines, and a batch of inputs it has not seen."""
    build, shape = _MODELS[request.param]
    torch.manual_seed(0)
    if request.param == "mobile":
        quantized, data = quantized_mobile()
    else:
        model = randomise_bn(build(), seed=1)
        data = [torch.randn(8, *shape) for _ in range(3)]
        recipe = mixq.Recipe.preset("rmsmp", act_bits=4)
        quantized = mixq.quantize(model, recipe, calibration_data=data[:2], progress=False)
    models = {e: mixq.to_integer(quantized, data[0], engine=e) for e in ENGINES}
    return models, data[2]


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IntegerModel]:
    """A packed residual model, written once; corruption tests copy it."""
    torch.manual_seed(0)
    model = randomise_bn(CifarResNet(blocks_per_stage=1), seed=2)
    data = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    recipe = mixq.Recipe.preset("rmsmp", act_bits=4)
    quantized = mixq.quantize(model, recipe, calibration_data=data, progress=False)
    integer = mixq.to_integer(quantized, data[0])
    path = tmp_path_factory.mktemp("packed") / "resnet.safetensors"
    save_packed(integer, path)
    return path, integer


def _layers(model: IntegerModel) -> dict[str, IntegerLayer]:
    return {n: m for n, m in model.graph_module.named_children() if isinstance(m, IntegerLayer)}


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("saved_engine", ENGINES)
def test_round_trip_is_bit_identical_on_both_engines(
    integer_models: tuple[dict[str, IntegerModel], Tensor], saved_engine: str, tmp_path: Path
) -> None:
    models, x = integer_models
    original = models[saved_engine]
    path = tmp_path / "model.safetensors"
    save_packed(original, path)
    expected = original.forward_integer(x)
    for engine in ENGINES:
        loaded = load_packed(path, engine=engine)
        assert loaded.engine == engine
        assert torch.equal(loaded.forward_integer(x), expected)
        assert torch.equal(loaded.forward_integer(x), models[engine].forward_integer(x))
        assert loaded.graph_module.code == original.graph_module.code
        assert loaded.layer_inputs == original.layer_inputs
        assert loaded.output_scale == original.output_scale
        assert torch.equal(loaded(x), original(x))


def test_round_trip_keeps_every_constant(
    integer_models: tuple[dict[str, IntegerModel], Tensor], tmp_path: Path
) -> None:
    original = integer_models[0]["reference"]
    save_packed(original, tmp_path / "model.safetensors")
    loaded = load_packed(tmp_path / "model.safetensors")
    before = dict(original.graph_module.named_children())
    after = dict(loaded.graph_module.named_children())
    assert list(after) == list(before)
    for name, module in before.items():
        assert type(after[name]) is type(module)
        assert after[name].extra_repr() == module.extra_repr()
        buffers = dict(after[name].named_buffers())
        for key, value in module.named_buffers():
            assert torch.equal(buffers[key], value), f"{name}.{key}"
    for name, layer in _layers(original).items():
        twin = after[name]
        assert twin.conv == layer.conv
        assert [(s, r.tolist()) for s, r, _ in twin.groups] == [
            (s, r.tolist()) for s, r, _ in layer.groups
        ]


def test_int8_layers_keep_their_engine_and_input_offset(
    integer_models: tuple[dict[str, IntegerModel], Tensor], tmp_path: Path
) -> None:
    original = integer_models[0]["int8"]
    save_packed(original, tmp_path / "model.safetensors")
    loaded = load_packed(tmp_path / "model.safetensors", engine="int8")
    for name, layer in _layers(original).items():
        twin = _layers(loaded)[name]
        assert twin.engine == layer.engine
        if layer.engine == "int8":
            assert twin.input_offset == layer.input_offset
            assert torch.equal(twin.int8_weight, layer.int8_weight)


def test_loaded_model_has_only_integer_modules(resnet_file: tuple[Path, IntegerModel]) -> None:
    loaded = load_packed(resnet_file[0])
    kinds = {type(m) for m in loaded.graph_module.children()}
    assert {m.__module__ for m in kinds} == {"mixq.integer.ops"}
    assert kinds >= {IntegerLayer, QuantizeInput, Requantize, GlobalAvgPool}


def test_header_describes_the_model(resnet_file: tuple[Path, IntegerModel]) -> None:
    path, integer = resnet_file
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["mixq"])
    assert header["format"] == FORMAT_NAME == "mixq-packed"
    assert header["version"] == FORMAT_VERSION == 2
    assert set(header["candidates"]) == {"fixed-4", "fixed-8", "sp2-4"}
    assert header["layer_inputs"] == integer.layer_inputs
    assert header["output_scale"] == integer.output_scale
    assert header["checksum"].startswith("sha256:")
    ops = [node["op"] for node in header["nodes"]]
    assert (ops[0], ops[-1]) == ("placeholder", "output")
    assert ops.count("call_module") == len(header["modules"])
    assert header["modules"]["conv1"]["conv"] == {
        "stride": [1, 1],
        "padding": [1, 1],
        "dilation": [1, 1],
        "groups": 1,
    }


def test_overwriting_replaces_the_file(
    resnet_file: tuple[Path, IntegerModel], tmp_path: Path
) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old contents")
    save_packed(resnet_file[1], target)
    assert target.read_bytes() == resnet_file[0].read_bytes()


# -- sizes --------------------------------------------------------------------------------


def _expected_weight_bytes(model: IntegerModel) -> tuple[int, int, int]:
    """Packed bytes (one bit stream per candidate group), the per-row bound, and the
    weights' total bits."""
    packed_total, row_bound, bits_total = 0, 0, 0
    for layer in _layers(model).values():
        elements = layer.weight[0].numel()
        for scheme, rows, _ in layer.groups:
            bits = Candidate.parse(scheme).bits
            packed_total += math.ceil(bits * rows.numel() * elements / 8)
            row_bound += rows.numel() * math.ceil(bits * elements / 8)
            bits_total += bits * rows.numel() * elements
    return packed_total, row_bound, bits_total


def test_weights_take_their_bit_width(resnet_file: tuple[Path, IntegerModel]) -> None:
    path, integer = resnet_file
    size = packed_size(integer)
    exact, row_bound, bits_total = _expected_weight_bytes(integer)
    assert size.weight_bytes == exact <= row_bound
    # Only the last byte of each group's stream holds padding.
    groups = sum(len(layer.groups) for layer in _layers(integer).values())
    assert 0 <= 8 * size.weight_bytes - bits_total < 8 * groups
    elements = sum(layer.weight.numel() for layer in _layers(integer).values())
    assert size.float_weight_bytes == 4 * elements
    mean_bits = bits_total / elements
    assert 4 < mean_bits < 5  # rmsmp: mostly 4-bit rows, a few 8-bit ones
    assert size.ratio == pytest.approx(32 / mean_bits, rel=0.01)
    # The file is the weights, the other tensors and the safetensors header: nothing more.
    tensors = load_file(str(path))
    on_disk = sum(t.numel() for name, t in tensors.items() if ".weight." in name)
    assert on_disk == size.weight_bytes
    (header_length,) = struct.unpack("<Q", path.read_bytes()[:8])
    assert path.stat().st_size == 8 + header_length + size.weight_bytes + size.other_bytes
    assert path.stat().st_size < size.float_weight_bytes / 4


def test_packs_two_4_bit_values_per_byte_low_nibble_first() -> None:
    assert pack_bits(np.array([1, 2, 3, 15]), 4).tolist() == [0x21, 0xF3]
    assert pack_bits(np.array([200, 7]), 8).tolist() == [200, 7]
    # 3-bit values run across byte boundaries: 8 values in 3 bytes.
    assert len(pack_bits(np.arange(8), 3)) == 3 == packed_bytes(3, 8)
    assert unpack_bits(pack_bits(np.arange(8), 3), 3, 8).tolist() == list(range(8))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8), st.integers(0, 200), st.integers(0, 2**32 - 1))
def test_bit_packing_round_trips(bits: int, count: int, seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, 2**bits, size=count)
    data = pack_bits(values, bits)
    assert data.dtype == np.uint8 and len(data) == packed_bytes(bits, count)
    assert np.array_equal(unpack_bits(data, bits, count), values)


# Wide PoT grids (pot-7: 2^62 steps of the finest level) do not fit int64.
_PACKABLE = [c for c in ALL_CANDIDATES if max(integer_magnitudes(c)[0]) < 2**62]


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(_PACKABLE), st.integers(1, 100), st.integers(0, 2**32 - 1))
def test_levels_round_trip_for_every_candidate(candidate: Candidate, count: int, seed: int) -> None:
    grid = bits._levels(candidate)
    assert len(grid) <= 2**candidate.bits
    values = np.random.default_rng(seed).choice(grid, size=count)
    data = pack_levels(values, candidate)
    assert len(data) == packed_bytes(candidate.bits, count)
    assert np.array_equal(unpack_levels(data, candidate, count), values)


def test_values_off_the_grid_are_not_packed() -> None:
    with pytest.raises(PackedFormatError, match="off the sp2-4 grid"):
        pack_levels(np.array([3]), Candidate.parse("sp2-4"))  # sp2-4 has no 3


# -- refused files ------------------------------------------------------------------------


def _read_back(path: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["mixq"])
    return header, load_file(str(path))


def _rewrite(
    source: Path,
    target: Path,
    edit: Callable[[dict[str, Any], dict[str, Tensor]], None],
    *,
    reseal: bool,
) -> None:
    """Copy ``source`` to ``target`` with ``edit`` applied; ``reseal`` recomputes the
    checksum, as a writer that made the mistake itself would."""
    header, tensors = _read_back(source)
    edit(header, tensors)
    if reseal:
        header["checksum"] = checksum(header, tensors)
    save_file(tensors, str(target), metadata={"mixq": json.dumps(header)})


def _first_mixed_layer(header: dict[str, Any]) -> str:
    return next(
        name
        for name, entry in header["modules"].items()
        if entry["kind"] == "IntegerLayer" and len(entry["candidates"]) > 1
    )


def _set(key: str, value: Any) -> Callable[[dict[str, Any], dict[str, Tensor]], None]:
    def edit(header: dict[str, Any], _tensors: dict[str, Tensor]) -> None:
        header[key] = value

    return edit


def _edit_requantize(header: dict[str, Any], _tensors: dict[str, Tensor]) -> None:
    entry = next(e for e in header["modules"].values() if e["kind"] == "Requantize")
    entry["multiplier"] += 1


def _edit_weight(_header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    tensors["linear.weight.fixed-8"][0] ^= 1


def _codes_int64(header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    name = _first_mixed_layer(header)
    tensors[f"{name}.codes"] = tensors[f"{name}.codes"].to(torch.int64)


def _multiplier_too_long(header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    name = _first_mixed_layer(header)
    tensors[f"{name}.multiplier"] = torch.cat([tensors[f"{name}.multiplier"]] * 2)


def _code_out_of_range(header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    tensors[f"{_first_mixed_layer(header)}.codes"][0] = 7


def _level_out_of_range(header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    # sp2-4 has 13 levels; the level index 15 names none of them.
    tensors[f"{_first_mixed_layer(header)}.weight.sp2-4"][0] = 0xFF


def _shift_out_of_range(header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    tensors[f"{_first_mixed_layer(header)}.shift"][0] = 99


def _drop_tensor(header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    del tensors[f"{_first_mixed_layer(header)}.offset"]


def _extra_tensor(_header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    tensors["stowaway"] = torch.zeros(3)


def _unknown_function(header: dict[str, Any], _tensors: dict[str, Tensor]) -> None:
    node = next(n for n in header["nodes"] if n["op"] == "call_function")
    node["target"] = "os.system"


def _dangling_node(header: dict[str, Any], _tensors: dict[str, Tensor]) -> None:
    header["nodes"][-1]["args"] = [{"node": "nowhere"}]


def _residual_layer(header: dict[str, Any]) -> dict[str, Any]:
    return next(
        e
        for e in header["modules"].values()
        if e["kind"] == "IntegerLayer" and e["residual_multiplier"] is not None
    )


def _residual_too_large(header: dict[str, Any], _tensors: dict[str, Tensor]) -> None:
    _residual_layer(header)["residual_multiplier"] = 2**40


def _layer_bound_text(header: dict[str, Any], _tensors: dict[str, Tensor]) -> None:
    _residual_layer(header)["low"] = "0"


_RESEALED = {
    "wrong-format": (_set("format", "mixq.quantized-model"), "format .* is not 'mixq-packed'"),
    "newer-version": (_set("version", 3), "newer format version 3"),
    "version-1": (_set("version", 1), "version 1 holds the integer graph of mixq before"),
    "residual-range": (_residual_too_large, "residual_multiplier' = .* is not within"),
    "layer-bound-type": (_layer_bound_text, "'low' is '0', expected"),
    "unknown-version": (_set("version", "1.0"), "unknown format version"),
    "codes-dtype": (_codes_int64, r"codes' is torch.int64 .*expected torch.uint8"),
    "multiplier-shape": (_multiplier_too_long, r"multiplier' is .*expected torch.int64"),
    "code-range": (_code_out_of_range, "codes out of range"),
    "level-range": (_level_out_of_range, "sp2-4 level index 15 out of range"),
    "shift-range": (_shift_out_of_range, "shift out of range"),
    "missing-tensor": (_drop_tensor, r"offset' is missing"),
    "extra-tensor": (_extra_tensor, "unexpected tensors .*stowaway"),
    "unknown-function": (_unknown_function, "unknown function 'os.system'"),
    "dangling-node": (_dangling_node, "'nowhere', which is not an earlier node"),
}


@pytest.mark.parametrize("case", sorted(_RESEALED))
def test_consistent_but_wrong_files_are_refused(
    resnet_file: tuple[Path, IntegerModel], tmp_path: Path, case: str
) -> None:
    edit, message = _RESEALED[case]
    target = tmp_path / "bad.safetensors"
    _rewrite(resnet_file[0], target, edit, reseal=True)
    with pytest.raises(PackedFormatError, match=message):
        load_packed(target)


@pytest.mark.parametrize("edit", [_edit_requantize, _edit_weight], ids=["header", "tensor"])
def test_edits_fail_the_checksum(
    resnet_file: tuple[Path, IntegerModel],
    tmp_path: Path,
    edit: Callable[[dict[str, Any], dict[str, Tensor]], None],
) -> None:
    target = tmp_path / "edited.safetensors"
    _rewrite(resnet_file[0], target, edit, reseal=False)
    with pytest.raises(PackedFormatError, match="checksum mismatch"):
        load_packed(target)


def test_a_flipped_byte_fails_the_checksum(
    resnet_file: tuple[Path, IntegerModel], tmp_path: Path
) -> None:
    data = bytearray(resnet_file[0].read_bytes())
    data[-1] ^= 0x10  # the last byte belongs to a tensor
    target = tmp_path / "flipped.safetensors"
    target.write_bytes(bytes(data))
    with pytest.raises(PackedFormatError, match="checksum mismatch"):
        load_packed(target)


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, -1], ids=str)
def test_truncated_files_are_refused(
    resnet_file: tuple[Path, IntegerModel], tmp_path: Path, keep: float
) -> None:
    data = resnet_file[0].read_bytes()
    end = int(len(data) * keep) if isinstance(keep, float) else keep
    target = tmp_path / "truncated.safetensors"
    target.write_bytes(data[:end])
    with pytest.raises(PackedFormatError, match="not a readable safetensors file"):
        load_packed(target)


def test_other_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PackedFormatError, match="not found"):
        load_packed(tmp_path / "absent.safetensors")
    text = tmp_path / "notes.txt"
    text.write_text("integer weights, honestly\n" * 20)
    with pytest.raises(PackedFormatError, match="not a readable safetensors file"):
        load_packed(text)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(PackedFormatError, match="not a mixq packed model"):
        load_packed(foreign)
    assert issubclass(PackedFormatError, CheckpointError)


def test_unknown_engine_is_refused(resnet_file: tuple[Path, IntegerModel]) -> None:
    with pytest.raises(IntegerConversionError, match="unknown engine 'turbo'"):
        load_packed(resnet_file[0], engine="turbo")


# -- atomic writes ------------------------------------------------------------------------


def test_failed_save_leaves_no_file(
    resnet_file: tuple[Path, IntegerModel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_save_file(tensors: dict[str, Tensor], path: str, metadata: Any = None) -> None:
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(packed, "save_file", broken_save_file)
    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError, match="disk full"):
        save_packed(resnet_file[1], target)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"previous")
    with pytest.raises(OSError, match="disk full"):
        save_packed(resnet_file[1], target)
    assert target.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [target]


def test_unpackable_model_is_refused_before_writing(
    resnet_file: tuple[Path, IntegerModel], tmp_path: Path
) -> None:
    integer = load_packed(resnet_file[0])
    layer = _layers(integer)["layer1_0_conv1"]
    sp2_rows = next(rows for scheme, rows, _ in layer.groups if scheme == "sp2-4")
    layer.weight[sp2_rows[0], 0, 0, 0] = 3  # no sp2-4 level is 3
    with pytest.raises(PackedFormatError, match="off the sp2-4 grid"):
        save_packed(integer, tmp_path / "model.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def mobile_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, IntegerModel]:
    """A packed MobileNet-style model: lookup tables, padded max pooling, cat, clamps."""
    quantized, data = quantized_mobile()
    integer = mixq.to_integer(quantized, data[0])
    path = tmp_path_factory.mktemp("packed") / "mobile.safetensors"
    save_packed(integer, path)
    return path, integer


def test_every_module_kind_of_the_mobile_model_is_packed(
    mobile_file: tuple[Path, IntegerModel],
) -> None:
    header, _ = _read_back(mobile_file[0])
    kinds = {entry["kind"] for entry in header["modules"].values()}
    assert kinds >= {"IntegerLayer", "QuantizeInput", "Lookup", "MaxPool", "GlobalAvgPool"}
    pool = next(e for e in header["modules"].values() if e["kind"] == "MaxPool")
    assert (pool["kernel"], pool["stride"], pool["padding"]) == (3, 2, 1)
    targets = {n["target"] for n in header["nodes"] if n["op"] == "call_function"}
    assert "torch.cat" in targets


def _lookup_name(header: dict[str, Any]) -> str:
    return next(n for n, e in header["modules"].items() if e["kind"] == "Lookup")


def _lookup_function(header: dict[str, Any], _tensors: dict[str, Tensor]) -> None:
    header["modules"][_lookup_name(header)]["function"] = "exp"


def _lookup_table_dtype(header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    name = f"{_lookup_name(header)}.table"
    tensors[name] = tensors[name].to(torch.int32)


def _lookup_table_range(header: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    tensors[f"{_lookup_name(header)}.table"][0] = 2**40


def _pool_padding(header: dict[str, Any], _tensors: dict[str, Tensor]) -> None:
    entry = next(e for e in header["modules"].values() if e["kind"] == "MaxPool")
    entry["padding"] = entry["kernel"]


def _bad_module_name(header: dict[str, Any], _tensors: dict[str, Tensor]) -> None:
    name = _lookup_name(header)
    header["modules"]['x"); import os; ("'] = header["modules"].pop(name)


_MOBILE_RESEALED = {
    "lookup-function": (_lookup_function, "lookup function 'exp' not in"),
    "lookup-dtype": (_lookup_table_dtype, r"table' is torch.int32"),
    "lookup-range": (_lookup_table_range, "table out of range"),
    "pool-padding": (_pool_padding, r"'padding' = 3 is not within \[0, 2\]"),
    "module-name": (_bad_module_name, "not a plain identifier"),
}


@pytest.mark.parametrize("case", sorted(_MOBILE_RESEALED))
def test_damaged_new_module_kinds_are_refused(
    mobile_file: tuple[Path, IntegerModel], tmp_path: Path, case: str
) -> None:
    edit, message = _MOBILE_RESEALED[case]
    target = tmp_path / "bad.safetensors"
    _rewrite(mobile_file[0], target, edit, reseal=True)
    with pytest.raises(PackedFormatError, match=message):
        load_packed(target)


def test_loading_on_the_fast_engine_gives_the_same_integers(
    mobile_file: tuple[Path, IntegerModel],
) -> None:
    path, integer = mobile_file
    x = quantized_mobile()[1][2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the int8 fallback without a compiler
        loaded = load_packed(path, engine="fast")
    assert torch.equal(loaded.forward_integer(x), integer.forward_integer(x))
