"""Any edit of a quantised checkpoint's header, or of its bytes, loads correctly or raises a
CheckpointError (never another exception), and loading never writes a file."""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _hostile_values import json_like
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load as load_tensors
from torch import nn

import mixq
from mixq.checkpoint import checksum
from mixq.errors import MixqError

SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()


@pytest.fixture(scope="module")
def saved() -> bytes:
    q = mixq.quantize(_mlp(), "msp", calibration_data=[torch.randn(8, 4)], progress=False)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "q.safetensors"
        mixq.save_quantized(q, path)
        return path.read_bytes()


def _split(raw: bytes) -> tuple[dict[str, Any], bytes]:
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def _join(outer: dict[str, Any], data: bytes) -> bytes:
    text = json.dumps(outer).encode()
    return len(text).to_bytes(8, "little") + text + data


def _load(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "q.safetensors"
        path.write_bytes(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(MixqError):
                mixq.load_quantized(_mlp(), path)
        assert [p.name for p in Path(folder).iterdir()] == ["q.safetensors"]


# An edit: a path into the header (keys as they exist, or new) and a value to put there.
paths = st.lists(
    st.sampled_from(
        [
            "layers",
            "extra_state",
            0,
            1,
            "name",
            "kind",
            "bn",
            "candidates",
            "act_bits",
            "bits",
            "signed",
            "method",
            "0.act_quant._extra_state",
            "version",
            "checksum",
        ]
    ),
    min_size=1,
    max_size=4,
)


def _edit(header: dict[str, Any], path: list[Any], value: Any) -> None:
    target: Any = header
    for key in path[:-1]:
        try:
            target = target[str(key) if isinstance(target, dict) else key]
        except (KeyError, IndexError, TypeError):
            return
    # A JSON object's keys are strings: an index used on an object becomes one, as it would
    # after a round trip through the file.
    last = str(path[-1]) if isinstance(target, dict) else path[-1]
    with contextlib.suppress(IndexError, TypeError):
        target[last] = value


@SETTINGS
@given(paths, json_like, st.booleans())
def test_edited_headers_load_or_raise_a_typed_error(
    saved: bytes, path: list[Any], value: Any, rehash: bool
) -> None:
    outer, data = _split(saved)
    header = json.loads(outer["__metadata__"]["mixq"])
    _edit(header, path, value)
    if rehash and isinstance(header, dict):
        header["checksum"] = checksum(header, load_tensors(saved))
    outer["__metadata__"]["mixq"] = json.dumps(header)
    _load(_join(outer, data))


@SETTINGS
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_flipped_bytes_load_or_raise_a_typed_error(saved: bytes, position: int, flip: int) -> None:
    raw = bytearray(saved)
    raw[position % len(raw)] ^= flip
    _load(bytes(raw))
