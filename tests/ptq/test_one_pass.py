"""One-pass (lockstep) error-feedback rounding against the layer-by-layer loop."""

from __future__ import annotations

import copy

import pytest
import torch
from _ptq_models import calibrated_small_resnet, rounded_weights, small_resnet_batches
from torch import nn

import mixq
from mixq.errors import CalibrationError
from mixq.ptq.rounding import apply_error_feedback, apply_error_feedback_layerwise


def test_one_pass_rounds_a_residual_network_exactly_as_the_layerwise_loop() -> None:
    batches = small_resnet_batches()
    quantized = calibrated_small_resnet(batches)
    nearest = rounded_weights(quantized)
    layerwise, one_pass = copy.deepcopy(quantized), copy.deepcopy(quantized)
    names = apply_error_feedback_layerwise(layerwise, batches, progress=False)
    assert apply_error_feedback(one_pass, batches, progress=False) == names
    expected, got = rounded_weights(layerwise), rounded_weights(one_pass)
    # Same batches, same order, same per-batch sums: bitwise the same weights.
    assert all(torch.equal(expected[n], got[n]) for n in expected)
    assert sum(not torch.equal(nearest[n], got[n]) for n in got) >= len(names) - 1


class _SharedLayer(nn.Module):
    """The same Linear twice per forward: the lockstep run cannot pause there once."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.inner(torch.relu(self.inner(x)))))


def test_a_layer_run_twice_per_forward_falls_back_to_the_layerwise_loop() -> None:
    torch.manual_seed(0)
    batches = [torch.randn(16, 6) for _ in range(3)]
    quantized = mixq.quantize(_SharedLayer(), "fixed4", progress=False)
    mixq.calibrate(quantized, batches, progress=False)
    layerwise, one_pass = copy.deepcopy(quantized), copy.deepcopy(quantized)
    apply_error_feedback_layerwise(layerwise, batches, progress=False)
    apply_error_feedback(one_pass, batches, progress=False)
    expected, got = rounded_weights(layerwise), rounded_weights(one_pass)
    assert all(torch.equal(expected[n], got[n]) for n in expected)


class _Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_a_layer_no_batch_reaches_is_an_error_naming_it() -> None:
    batches = [torch.randn(8, 4)]
    recipe = mixq.Recipe.preset("fixed4", act_bits=0)  # float inputs: nothing to calibrate
    quantized = mixq.quantize(_Unused(), recipe, progress=False)
    with pytest.raises(CalibrationError, match="unused"):
        apply_error_feedback(quantized, batches, progress=False)


def test_an_error_inside_a_forward_reaches_the_caller_and_leaves_no_thread() -> None:
    import threading

    before = threading.active_count()
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    good = [torch.randn(8, 4)]
    quantized = mixq.quantize(net, "fixed4", calibration_data=good, progress=False)
    bad = [good[0], torch.randn(8, 5)]  # the second batch has the wrong width
    with pytest.raises(RuntimeError):
        apply_error_feedback(quantized, bad, progress=False)
    assert threading.active_count() == before


def test_no_data_is_a_calibration_error() -> None:
    quantized = mixq.quantize(nn.Linear(4, 2), "fixed4", progress=False)
    with pytest.raises(CalibrationError, match="yielded nothing"):
        apply_error_feedback(quantized, [], progress=False)


def test_one_pass_on_a_small_bert_with_keyword_batches_of_different_lengths() -> None:
    transformers = pytest.importorskip("transformers")
    from mixq.models.sentence_encoder import SentenceEncoder

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    encoder = SentenceEncoder(transformers.BertModel(config, add_pooling_layer=False).eval())
    batches = [
        {
            "input_ids": torch.randint(0, 64, (3, length)),
            "attention_mask": torch.ones(3, length, dtype=torch.int64),
        }
        for length in (5, 9)  # padded to different lengths, as tokenised batches are
    ]
    recipe = mixq.Recipe.preset("fixed4", first_last=None)
    quantized = mixq.quantize(encoder, recipe, calibration_data=batches, progress=False)
    layerwise, one_pass = copy.deepcopy(quantized), copy.deepcopy(quantized)
    names = apply_error_feedback_layerwise(layerwise, batches, progress=False)
    assert apply_error_feedback(one_pass, batches, progress=False) == names
    assert len(names) == 12  # q, k, v, output, intermediate, output of 2 layers
    expected, got = rounded_weights(layerwise), rounded_weights(one_pass)
    assert all(torch.equal(expected[n], got[n]) for n in expected)
