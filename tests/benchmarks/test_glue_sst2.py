"""The SST-2 benchmark's loader (typed errors), its seeded batches and its resume key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import glue_sst2
from _seeds import BenchmarkSettingsError
from _sst2 import LabelledSentences, TokenBatches, load_sst2

from mixq.errors import DataError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_sst2_reads_sentences_and_labels(tmp_path: Path) -> None:
    data = load_sst2(_write(tmp_path, 'sentence\tlabel\na "quoted" gem \t1\ndull\t0\n'))
    assert data.sentences == ['a "quoted" gem', "dull"]
    assert data.labels == [1, 0]
    assert data.head(1).labels == [1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("text\tlabel\nfine\t1\n", "no column"),
        ("sentence\tlabel\nfine\t2\n", "not 0 or 1"),
        ("sentence\tlabel\n \t1\n", "empty sentence"),
        ("sentence\tlabel\n", "no sentences"),
    ],
)
def test_load_sst2_names_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_sst2(_write(tmp_path, text))


def test_load_sst2_refuses_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_sst2(tmp_path / "absent.tsv")
    binary = tmp_path / "train.tsv"
    binary.write_bytes(b"sentence\tlabel\n\xff\xfe\t1\n")
    with pytest.raises(DataError, match="UTF-8"):
        load_sst2(binary)


def _fake_tokenizer(sentences: list[str], **_: object) -> dict[str, torch.Tensor]:
    ids = torch.tensor([[int(s)] for s in sentences])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _order(batches: TokenBatches, epoch: int) -> list[int]:
    batches.set_epoch(epoch)
    return [int(i) for b in batches for i in b["input_ids"][:, 0]]


def test_token_batches_order_is_a_function_of_seed_and_epoch() -> None:
    data = LabelledSentences([str(i) for i in range(10)], [i % 2 for i in range(10)])
    batches = TokenBatches(_fake_tokenizer, data, 3, shuffle=True, seed=5)
    assert len(batches) == 4
    first = _order(batches, 0)
    assert sorted(first) == list(range(10))
    assert _order(batches, 0) == first  # a resumed epoch sees the same batches
    assert _order(batches, 1) != first
    other_seed = TokenBatches(_fake_tokenizer, data, 3, shuffle=True, seed=6)
    assert _order(other_seed, 0) != first
    labels = [int(v) for b in TokenBatches(_fake_tokenizer, data, 4) for v in b["labels"]]
    assert labels == data.labels  # unshuffled: file order, labels kept with their sentence


def test_glue_key_and_seed_checks() -> None:
    args = glue_sst2.parse_args(["--seeds", "0", "1", "2"])
    key = glue_sst2.unit_settings(args, "msp", 3, 0)
    moved = glue_sst2.parse_args(["--seeds", "0", "1", "2", "--budget-minutes", "9"])
    assert glue_sst2.unit_settings(moved, "msp", 3, 0) == key
    changed = glue_sst2.parse_args(["--seeds", "0", "1", "2", "--qat-lr", "1e-4"])
    assert glue_sst2.unit_settings(changed, "msp", 3, 0) != key
    # the float model's key ignores the QAT settings, so a new QAT reuses the float models
    assert glue_sst2.unit_settings(changed, "fp32", 32, 0) == glue_sst2.unit_settings(
        args, "fp32", 32, 0
    )
    longer = glue_sst2.parse_args(["--seeds", "0", "1", "2", "--float-epochs", "2"])
    assert glue_sst2.unit_settings(longer, "fp32", 32, 0) != glue_sst2.unit_settings(
        args, "fp32", 32, 0
    )
    with pytest.raises(BenchmarkSettingsError, match="3 seeds"):
        glue_sst2.parse_args(["--seeds", "0"])
    assert str(glue_sst2.method_recipe("rmsmp", 3).default.ratio).startswith("sp2-3:0.6")
    carrying = glue_sst2.parse_args(["--seeds", "0", "1", "2", "--carry-from", "w4.json"])
    assert glue_sst2.unit_settings(carrying, "msp", 3, 0) == key


def test_glue_settings_cover_carried_levels_but_not_the_float_rows() -> None:
    args = glue_sst2.parse_args(["--seeds", "0", "1", "2", "--eq-bits", "3"])

    def row(method: str, level: int, series: list[float]) -> dict:
        return {
            "method": method,
            "eq_bits_target": level,
            "seeds": [0, 1, 2],
            "accuracy_per_epoch": series,
            "accuracy_se": 0.001,
        }

    rows = [row("fixed4", 4, [0.86, 0.87]), row("rmsmp", 4, [0.87, 0.86])]
    carried = {"rows": ["fp32@w32", "fixed4@w4", "rmsmp@w4"], "levels": [4, 32]}
    settings = glue_sst2.result_settings(args, rows, False, 0.0, carried)
    assert settings["eq_bits_levels"] == [4, 3]
    assert settings["convergence"]["w4"]["resolved_flipped"] == [["fixed4", "rmsmp"]]
    assert settings["carried"] == carried
    assert set(glue_sst2.AGREED_SETTINGS) <= set(settings)
