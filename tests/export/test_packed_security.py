"""A packed file is data: nothing read from its header ever runs as code, and forged sizes
fail before anything is allocated. Each crafted file carries a correctly recomputed
checksum, as an attacker's would, so only validation stands between it and torch.fx's
code generation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import mixq.export.packed as packed
from mixq.errors import PackedFormatError


def write_packed(path: Path, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    header = {**header, "checksum": packed.checksum(header, tensors)}
    save_file(tensors, str(path), metadata={"mixq": json.dumps(header)})
    return path


def identity_header(**changes: Any) -> dict[str, Any]:
    """A minimal valid file: one input straight to the output."""
    header: dict[str, Any] = {
        "format": packed.FORMAT_NAME,
        "version": packed.FORMAT_VERSION,
        "candidates": [],
        "output_scale": 1.0,
        "layer_inputs": {},
        "modules": {},
        "nodes": [
            {"name": "x", "op": "placeholder", "target": "x", "args": [], "kwargs": {}},
            {
                "name": "output",
                "op": "output",
                "target": "output",
                "args": [{"node": "x"}],
                "kwargs": {},
            },
        ],
    }
    header.update(changes)
    return header


def test_the_minimal_file_loads_and_runs(tmp_path: Path) -> None:
    model = packed.load_packed(write_packed(tmp_path / "ok.packed", identity_header(), {}))
    x = torch.arange(6).reshape(2, 3)
    assert torch.equal(model.graph_module(x), x)


def payload(sentinel: Path) -> str:
    return f"__import__('os').system('touch {sentinel}')"


def crafted_headers(sentinel: Path) -> dict[str, dict[str, Any]]:
    code = payload(sentinel)
    base = identity_header()
    nodes = base["nodes"]
    getattr_node = {
        "name": "leak",
        "op": "call_function",
        "target": "getattr",
        "args": [{"node": "x"}, "__class__"],
        "kwargs": {},
    }
    kwarg_node = {
        "name": "flat",
        "op": "call_function",
        "target": "torch.flatten",
        "args": [{"node": "x"}],
        "kwargs": {f"start_dim=0, **{{}}) or {code} #": 1},
    }
    return {
        "placeholder default": identity_header(
            nodes=[{**nodes[0], "target": f"x={code}"}, nodes[1]]
        ),
        "node name": identity_header(nodes=[{**nodes[0], "name": f"x = {code}; y"}, nodes[1]]),
        "keyword name": identity_header(nodes=[nodes[0], kwarg_node, nodes[1]]),
        "getattr": identity_header(nodes=[nodes[0], getattr_node, nodes[1]]),
        "dunder input": identity_header(nodes=[{**nodes[0], "target": "__class__"}, nodes[1]]),
    }


@pytest.mark.parametrize(
    "case", ["placeholder default", "node name", "keyword name", "getattr", "dunder input"]
)
def test_code_in_a_header_never_runs(tmp_path: Path, case: str) -> None:
    sentinel = tmp_path / "pwned"
    path = write_packed(tmp_path / "evil.packed", crafted_headers(sentinel)[case], {})
    with pytest.raises(PackedFormatError, match=r"identifier|getattr"):
        packed.load_packed(path)
    assert not sentinel.exists()


def test_module_names_must_be_identifiers(tmp_path: Path) -> None:
    header = identity_header(modules={"a b": {"kind": "MaxPool", "kernel": 2, "stride": 2}})
    with pytest.raises(PackedFormatError, match="identifier"):
        packed.load_packed(write_packed(tmp_path / "m.packed", header, {}))


def test_a_forged_huge_shape_fails_before_allocating(tmp_path: Path) -> None:
    layer = {
        "kind": "IntegerLayer",
        "weight_shape": [2, 2**40],
        "candidates": ["fixed-4"],
        "conv": None,
    }
    header = identity_header(candidates=["fixed-4"], modules={"fc": layer})
    tensors = {
        "fc.codes": torch.zeros(2, dtype=torch.uint8),
        "fc.weight.fixed-4": torch.zeros(8, dtype=torch.uint8),
        **{f"fc.{f}": torch.ones(2, dtype=torch.int64) for f in ("multiplier", "shift", "offset")},
    }
    with pytest.raises(PackedFormatError):  # not MemoryError
        packed.load_packed(write_packed(tmp_path / "big.packed", header, tensors))


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), 0.0, -1.0])
def test_a_non_finite_output_scale_is_refused(tmp_path: Path, scale: float) -> None:
    path = write_packed(tmp_path / "s.packed", identity_header(output_scale=scale), {})
    with pytest.raises(PackedFormatError, match="output_scale"):
        packed.load_packed(path)


_TEXT = st.text(alphabet=st.characters(codec="ascii"), max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    node=st.sampled_from([0, 1]),
    key=st.sampled_from(["name", "op", "target", "args", "kwargs"]),
    value=_JSON,
)
def test_any_mutated_node_gives_a_typed_error_or_a_model(
    tmp_path: Path, node: int, key: str, value: Any
) -> None:
    sentinel = tmp_path / "pwned"
    header = identity_header()
    header["nodes"][node] = {**header["nodes"][node], key: value}
    if isinstance(value, str):  # give every string a chance to carry the payload
        header["nodes"][node][key] = value + payload(sentinel)
    path = write_packed(tmp_path / "fuzz.packed", header, {})
    try:
        model = packed.load_packed(path)
    except PackedFormatError:
        pass
    else:
        model.graph_module(torch.zeros(1))
    assert not sentinel.exists()
