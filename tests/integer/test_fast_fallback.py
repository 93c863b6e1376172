"""Where the fast kernels cannot be built, ``engine="fast"`` warns and runs the int8 engine,
with the same integers."""

from __future__ import annotations

import pytest
import torch
from _integer_models import batches, quantize, small_cnn

import mixq
import mixq.integer.fast as fast_package
from mixq.errors import FastEngineUnavailableError


def test_a_failed_kernel_build_falls_back_to_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_compiler(model: object) -> object:
        raise FastEngineUnavailableError("no C++ compiler (c++ or $CXX) to build the fast kernels")

    monkeypatch.setattr(fast_package, "lower", no_compiler)
    data = batches((4, 3, 16, 16))
    qnet = quantize(small_cnn(), "rmsmp", data)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        fallback = mixq.to_integer(qnet, data[0], engine="fast")
    assert fallback.engine == "int8"
    reference = mixq.to_integer(qnet, data[0])
    assert torch.equal(fallback.forward_integer(data[1]), reference.forward_integer(data[1]))
