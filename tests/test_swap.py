"""The module swap on its own (mixq.swap) and as quantize's first step."""

from __future__ import annotations

import warnings

import torch
from torch import nn

import mixq
from mixq.errors import FloatLayerWarning, UnusedRuleWarning
from mixq.nn.layers import QuantConv2d, QuantLinear
from mixq.recipe import Recipe, Rule
from mixq.swap import swap_layers


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))


def test_swap_is_quantize_without_data() -> None:
    model = _model()
    swapped = swap_layers(model, "rmsmp")
    quantized = mixq.quantize(model, "rmsmp", progress=False)
    assert isinstance(swapped[0], QuantConv2d) and isinstance(swapped[3], QuantLinear)
    a, b = swapped.state_dict(), quantized.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def test_swap_copies_unless_inplace() -> None:
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swapped = swap_layers(model, "msp")
    assert swapped is not model and isinstance(model[0], nn.Conv2d)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    same = swap_layers(model, "msp", inplace=True)
    assert same is model and isinstance(model[0], QuantConv2d)


def _warning_files(call: object) -> dict[type[Warning], str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()  # type: ignore[operator]
    return {w.category: w.filename for w in caught}


def test_warnings_point_at_the_callers_line_through_either_entry() -> None:
    # Conv1d stays in float (FloatLayerWarning); a rule that matches nothing warns too.
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv1d(8, 8, 1), nn.Linear(8, 4))
    recipe = Recipe.preset("msp", first_last=None)
    recipe = Recipe(recipe.default, (*recipe.rules, Rule("no_such_layer", skip=True)))
    for call in (
        lambda: mixq.quantize(model, recipe, progress=False),
        lambda: swap_layers(model, recipe),
    ):
        files = _warning_files(call)
        assert files.get(FloatLayerWarning) == __file__
        assert files.get(UnusedRuleWarning) == __file__
