"""The shared ONNX graph helpers' checks of fx arguments."""

from __future__ import annotations

import pytest

from mixq.errors import IntegerConversionError
from mixq.export.onnx_graph import int_list


def test_int_list_returns_the_ints_of_a_list_or_tuple() -> None:
    assert int_list((1, 0, 2, 3), "pad", "pad_1") == [1, 0, 2, 3]
    assert int_list([0, -1], "pad", "pad_1") == [0, -1]


@pytest.mark.parametrize("arg", [3, None, (1, 2.0), [1, "2"]])
def test_int_list_refuses_anything_but_ints(arg: object) -> None:
    with pytest.raises(IntegerConversionError, match="pad_1: pad must be a list of ints"):
        int_list(arg, "pad", "pad_1")
