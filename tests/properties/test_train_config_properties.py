"""Any training options give a valid TrainConfig or a TrainConfigError."""

from __future__ import annotations

import math
from typing import Any

from _hostile_values import json_like, maybe
from hypothesis import given, settings
from hypothesis import strategies as st

from mixq.errors import TrainConfigError
from mixq.train import TrainConfig

numbers = st.one_of(
    st.integers(-5, 10), st.floats(allow_nan=True, allow_infinity=True), st.just(1e30)
)
options = st.fixed_dictionaries(
    {},
    optional={
        "epochs": maybe(st.integers(-2, 5) | st.floats(0, 5)),
        "lr": maybe(numbers),
        "optimizer": maybe(st.sampled_from(["sgd", "adamw", "adam"])),
        "momentum": maybe(numbers),
        "weight_decay": maybe(numbers),
        "warmup_epochs": maybe(numbers),
        "grad_clip": maybe(st.none() | numbers),
        "distill": maybe(st.sampled_from(["none", "logits", "outputs", "kl"])),
        "distill_weight": maybe(numbers),
        "task_weight": maybe(numbers),
        "temperature": maybe(numbers),
        "bn_batch_stats": maybe(st.booleans()),
        "freeze_bn_epoch": maybe(st.none() | st.integers(-5, 5)),
        "seed": maybe(st.integers(-3, 3)),
        "learning_rate": json_like,
    },
)


@settings(max_examples=100, deadline=None)
@given(options)
def test_train_options_build_a_valid_config_or_raise_a_typed_error(data: dict[str, Any]) -> None:
    try:
        config = TrainConfig.from_dict(data)
    except TrainConfigError:
        return
    assert isinstance(config.epochs, int) and not isinstance(config.epochs, bool)
    assert config.epochs >= 1
    for value in (config.lr, config.momentum, config.weight_decay, config.temperature):
        assert math.isfinite(value) and value >= 0
    assert config.lr > 0 and 0 <= config.momentum < 1
    assert config.freeze_bn_epoch is None or config.freeze_bn_epoch >= 0
    assert TrainConfig.from_dict(config.to_dict()) == config
