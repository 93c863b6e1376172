"""Model conversion: every model type, BN folding, rules, the copy, and real-data agreement."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mixq
from mixq.data import cifar10_loader
from mixq.models import SmallCNN, load_pretrained_cifar_resnet, resnet20, resnet56
from mixq.nn.layers import QuantConv2d, QuantLinear
from mixq.nn.weight_quant import RowWeightQuantizer
from mixq.ratio import Ratio
from mixq.recipe import LayerConfig, Recipe, Rule
from mixq.schemes import Candidate
from mixq.swap import quantizable_layer_names

RMSMP = Recipe.preset("rmsmp")
# The same ratios with cheap scale and score initialisation, for the larger models.
RMSMP_FAST = dataclasses.replace(RMSMP, scale_method="max", row_scorer="magnitude")


def _pretrained(shared_data: Path, name: str, file: str) -> nn.Module:
    path = shared_data / "resnet-cifar10" / file
    if not path.is_file():
        pytest.skip(f"pretrained checkpoint not found: {path}")
    return load_pretrained_cifar_resnet(name, path)


@pytest.fixture(scope="module")
def resnet20_pretrained(shared_data: Path) -> nn.Module:
    return _pretrained(shared_data, "resnet20", "resnet20-12fca82f.th")


@pytest.fixture(scope="module")
def resnet32_pretrained(shared_data: Path) -> nn.Module:
    return _pretrained(shared_data, "resnet32", "resnet32-d509ac18.th")


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10)
    )


def grouped_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, groups=4),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so folding is visible in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def check_conversion(
    model: nn.Module, recipe: Recipe, x: torch.Tensor, expected_bns: int
) -> nn.Module:
    """Quantise ``model`` and check the invariants every conversion must keep."""
    before = _state_snapshot(model)
    types_before = {n: type(m) for n, m in model.named_modules()}
    names = quantizable_layer_names(model)
    q = mixq.quantize(model, recipe, progress=False).eval()

    # The float model is untouched: same modules, same tensors.
    assert q is not model
    assert {n: type(m) for n, m in model.named_modules()} == types_before
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    # Every Conv2d/Linear swapped; every BN folded into its conv and replaced by Identity.
    modules = dict(q.named_modules())
    for name in names:
        expected_type = QuantConv2d if issubclass(types_before[name], nn.Conv2d) else QuantLinear
        assert isinstance(modules[name], expected_type), name
    assert quantizable_layer_names(q) == []
    bn_names = [n for n, t in types_before.items() if issubclass(t, nn.BatchNorm2d)]
    assert len(bn_names) == expected_bns
    assert all(isinstance(modules[n], nn.Identity) for n in bn_names)
    folded = [m for m in q.modules() if isinstance(m, QuantConv2d) and m.bn is not None]
    assert len(folded) == expected_bns
    assert sorted(m.folded_bn_name for m in folded) == sorted(bn_names)

    # describe() counts follow each layer's ratio exactly.
    summary = mixq.describe(q)
    assert [layer.name for layer in summary.layers] == names
    assert summary.float_layers == []
    assert sum(layer.bn_folded for layer in summary.layers) == expected_bns
    configs = recipe.resolve(names)
    for layer in summary.layers:
        expected = configs[layer.name].ratio.row_counts(layer.rows)
        assert layer.counts == {str(c): n for c, n in expected.items()}, layer.name
        assert layer.act_bits == configs[layer.name].act_bits

    # With quantisation off, the converted model computes what the float model does.
    mixq.set_quantization(q, weights=False, activations=False)
    with torch.no_grad():
        torch.testing.assert_close(q(x), model.eval()(x), rtol=1e-4, atol=1e-4)
    mixq.set_quantization(q, weights=True, activations=True)
    return q


CIFAR_BATCH = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_resnet20_pretrained(resnet20_pretrained: nn.Module) -> None:
    q = check_conversion(resnet20_pretrained, RMSMP, CIFAR_BATCH, expected_bns=19)
    counts = {layer.name: layer.counts for layer in mixq.describe(q).layers}
    assert counts["conv1"] == {"fixed-8": 16}
    assert counts["linear"] == {"fixed-8": 10}
    assert counts["layer1.0.conv1"] == {"sp2-4": 10, "fixed-4": 5, "fixed-8": 1}
    assert counts["layer2.0.conv1"] == {"sp2-4": 19, "fixed-4": 11, "fixed-8": 2}
    assert counts["layer3.2.conv2"] == {"sp2-4": 39, "fixed-4": 22, "fixed-8": 3}


def test_resnet32_pretrained(resnet32_pretrained: nn.Module) -> None:
    check_conversion(resnet32_pretrained, RMSMP_FAST, CIFAR_BATCH, expected_bns=31)


def test_resnet56_random_init() -> None:
    model = _randomise_bn(resnet56())
    q = check_conversion(model, RMSMP_FAST, CIFAR_BATCH[:2], expected_bns=55)
    assert len(mixq.describe(q).layers) == 56


def test_small_cnn() -> None:
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    check_conversion(_randomise_bn(SmallCNN()), RMSMP, x, expected_bns=4)


def test_mlp() -> None:
    x = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    recipe = Recipe.preset("msp", first_last=None)
    q = check_conversion(mlp().eval(), recipe, x, expected_bns=0)
    assert [layer.counts for layer in mixq.describe(q).layers] == [
        {"sp2-4": 16, "fixed-4": 16},
        {"sp2-4": 12, "fixed-4": 12},
        {"sp2-4": 5, "fixed-4": 5},
    ]


def test_grouped_and_depthwise_net() -> None:
    x = torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(3))
    q = check_conversion(_randomise_bn(grouped_net()), RMSMP, x, expected_bns=4)
    depthwise = q[3]
    assert isinstance(depthwise, QuantConv2d) and depthwise.groups == 8
    assert depthwise.weight_rows().shape == (8, 9)
    assert q[9].weight_rows().shape == (16, 36)


def test_quantised_model_runs_and_differs_from_float() -> None:
    model = _randomise_bn(grouped_net())
    x = torch.randn(8, 3, 9, 9, generator=torch.Generator().manual_seed(4))
    q = mixq.quantize(model, Recipe.preset("fixed4", first_last=None), progress=False).eval()
    with pytest.raises(mixq.CalibrationError):
        q(x)  # activation quantisers need calibration first
    assert mixq.calibrate(q, [x, x], progress=False) == 2
    with torch.no_grad():
        out, ref = q(x), model(x)
    assert out.shape == ref.shape and bool(torch.isfinite(out).all())
    assert not torch.allclose(out, ref)
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 0.5


def test_inplace_returns_the_same_model() -> None:
    model = mlp()
    q = mixq.quantize(model, "fixed8", inplace=True, progress=False)
    assert q is model
    assert isinstance(model[1], QuantLinear)


def test_calibration_data_calibrates_every_activation_quantiser() -> None:
    batches = [
        torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(i)) for i in range(3)
    ]
    q = mixq.quantize(mlp(), "rmsmp", calibration_data=batches, progress=False)
    acts = [m for m in q.modules() if isinstance(m, mixq.ActQuantizer)]
    assert len(acts) == 3 and all(bool(a.calibrated) for a in acts)
    assert [a.signed for a in acts] == [True, False, False]  # raw input, then after ReLUs
    assert q(batches[0]).shape == (16, 10)


def test_skip_rule_leaves_the_layer_in_float(resnet20_pretrained: nn.Module) -> None:
    recipe = dataclasses.replace(
        RMSMP_FAST, rules=(*RMSMP_FAST.rules, Rule("layer1.0.conv1", skip=True))
    )
    q = mixq.quantize(resnet20_pretrained, recipe, progress=False)
    summary = mixq.describe(q)
    assert summary.float_layers == ["layer1.0.conv1"]
    assert len(summary.layers) == 19
    assert type(q.layer1[0].conv1) is nn.Conv2d
    assert isinstance(q.layer1[0].bn1, nn.BatchNorm2d)  # its BN is not folded either
    assert isinstance(q.layer1[0].bn2, nn.Identity)
    assert summary.other_params == sum(
        p.numel() for p in (*q.layer1[0].conv1.parameters(), *q.layer1[0].bn1.parameters())
    )


def test_regex_first_last_and_override(resnet20_pretrained: nn.Module) -> None:
    recipe = Recipe(
        LayerConfig(Ratio.parse("sp2-4:0.5,fixed-4:0.5"), act_bits=4),
        (
            Rule("re:layer3\\..*", ratio=Ratio.parse("pot-4")),
            Rule("re:layer3\\.2\\.conv.", ratio=Ratio.parse("fixed-6"), act_bits=6),
            Rule("@first", ratio=Ratio.parse("fixed-8"), act_bits=8),
            Rule("@last", ratio=Ratio.parse("fixed-8"), act_bits=0),
        ),
        scale_method="max",
        row_scorer="magnitude",
    )
    summary = {
        layer.name: layer
        for layer in mixq.describe(
            mixq.quantize(resnet20_pretrained, recipe, progress=False)
        ).layers
    }
    assert summary["conv1"].counts == {"fixed-8": 16} and summary["conv1"].act_bits == 8
    assert summary["linear"].counts == {"fixed-8": 10} and summary["linear"].act_bits == 0
    for name in ("layer3.0.conv1", "layer3.1.conv2", "layer3.2.conv1"):
        expected = {"fixed-6": 64} if name.startswith("layer3.2") else {"pot-4": 64}
        assert summary[name].counts == expected, name
        assert summary[name].act_bits == (6 if name.startswith("layer3.2") else 4)
    assert summary["layer2.1.conv1"].counts == {"sp2-4": 16, "fixed-4": 16}
    assert summary["layer2.1.conv1"].act_bits == 4


def test_fold_bn_off_keeps_batchnorm(resnet20_pretrained: nn.Module) -> None:
    recipe = dataclasses.replace(RMSMP_FAST, fold_bn=False)
    q = mixq.quantize(resnet20_pretrained, recipe, progress=False).eval()
    assert sum(isinstance(m, nn.BatchNorm2d) for m in q.modules()) == 19
    assert all(m.bn is None for m in q.modules() if isinstance(m, QuantConv2d))
    mixq.set_quantization(q, weights=False, activations=False)
    with torch.no_grad():
        torch.testing.assert_close(q(CIFAR_BATCH), resnet20_pretrained(CIFAR_BATCH))


def test_custom_row_scorer_decides_the_high_precision_rows() -> None:
    def last_rows_first(name: str, w: torch.Tensor, ratio: Ratio) -> np.ndarray:
        return np.arange(w.shape[0], dtype=np.float64)

    ratio = Ratio.parse("fixed-4:0.75,fixed-8:0.25")
    recipe = Recipe(LayerConfig(ratio), scale_method="max")
    q = mixq.quantize(mlp(), recipe, row_scorer=last_rows_first, progress=False)
    for layer, high in ((q[1], 8), (q[3], 6), (q[5], 3)):  # 10 rows: 2.5 rounds up to 8 bits
        assert ratio.row_counts(layer.out_features)[Candidate.parse("fixed-8")] == high
        bits = layer.assignment.bits_per_row()
        assert bits.tolist() == [4] * (layer.out_features - high) + [8] * high


@pytest.mark.parametrize("scale_method", ["max", "mse"])
def test_error_rule_never_loses_to_the_variance_rule(scale_method: str) -> None:
    model = _randomise_bn(SmallCNN(width=16))
    by_rule = {}
    for rule in ("variance", "error"):
        recipe = Recipe(
            LayerConfig(Ratio.parse("sp2-4:0.5,fixed-4:0.5")),
            scheme_rule=rule,
            scale_method=scale_method,
        )
        by_rule[rule] = mixq.quantize(model, recipe, progress=False)
    for name, layer in by_rule["error"].named_modules():
        if isinstance(layer, QuantConv2d | QuantLinear):
            w = layer.weight_rows().detach()
            other = by_rule["variance"].get_submodule(name)
            assert layer.assignment.counts() == other.assignment.counts()
            error_total = float(layer.weight_quant.row_errors(w).sum())
            variance_total = float(other.weight_quant.row_errors(w).sum())
            assert error_total <= variance_total * (1 + 1e-6), name


def test_scales_are_initialised_per_row() -> None:
    q = mixq.quantize(
        mlp(),
        Recipe(LayerConfig(Ratio.parse("sp2-4:0.5,fixed-8:0.5")), scale_method="max"),
        progress=False,
    )
    layer = q[1]
    peaks = layer.weight_rows().detach().abs().amax(dim=1)
    torch.testing.assert_close(layer.weight_quant.alpha.detach(), peaks)
    assert isinstance(layer.weight_quant, RowWeightQuantizer)


def test_pretrained_fixed8_agrees_with_float(
    resnet20_pretrained: nn.Module, shared_data: Path
) -> None:
    root = shared_data / "cifar10-jpeg"
    images, _ = next(iter(cifar10_loader(root, "test", 200, limit=200)))
    calibration = [x for x, _ in cifar10_loader(root, "train", 64, limit=128)]
    # Nearest rounding, then calibration on training images (quantize(calibration_data=...)
    # would also run error-feedback rounding, which is slower and not what is measured here).
    q = mixq.quantize(resnet20_pretrained, "fixed8", progress=False)
    mixq.calibrate(q, calibration, progress=False)
    q.eval()
    with torch.no_grad():
        float_pred = resnet20_pretrained(images).argmax(dim=1)
        quant_pred = q(images).argmax(dim=1)
    agreement = float((float_pred == quant_pred).float().mean())
    # Measured 0.99 (198 of 200 images); W8A8 must not move more than a handful.
    assert agreement >= 0.97


def _count(model: nn.Module, kind: Callable[[nn.Module], bool]) -> int:
    return sum(kind(m) for m in model.modules())


def test_quantizable_layer_names() -> None:
    model = resnet20()
    names = quantizable_layer_names(model)
    assert len(names) == 20
    assert names[0] == "conv1" and names[-1] == "linear"
    assert names[1:3] == ["layer1.0.conv1", "layer1.0.conv2"]
    assert _count(model, lambda m: isinstance(m, nn.Conv2d | nn.Linear)) == 20
    partly = copy.deepcopy(model)
    partly.linear = QuantLinear.from_float(
        partly.linear, mixq.RowAssignment.uniform(Candidate.parse("fixed-8"), 10)
    )
    assert quantizable_layer_names(partly) == names[:-1]
