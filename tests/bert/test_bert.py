"""The BERT path on a small BERT built from a config (no download): sentence embeddings,
quantisation with keyword-input calibration batches, tokenised batches and the STS-B metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mixq
from mixq.data.stsb import load_stsb, sentence_batches, spearman_of_cosines
from mixq.errors import CheckpointError, DataError
from mixq.models.sentence_encoder import SentenceEncoder, embed, load_minilm

transformers = pytest.importorskip("transformers", reason="the 'bert' extra is not installed")

WORDS = ["the", "cat", "dog", "sat", "ran", "on", "a", "mat", "fast", "slow", "big", "red"]


def tiny_bert(seed: int = 0) -> SentenceEncoder:
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return SentenceEncoder(transformers.BertModel(config, add_pooling_layer=False).eval())


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> object:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return transformers.BertTokenizer(str(vocab))


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(2, 9))) for _ in range(count)]


def test_embeddings_are_unit_norm_and_ignore_padding(tokenizer: object) -> None:
    encoder = tiny_bert()
    text = ["the cat sat on a mat", "a dog"]
    together = embed(encoder, tokenizer, text)  # "a dog" is padded to the longer sentence
    alone = embed(encoder, tokenizer, text[1:])
    assert together.shape == (2, 32)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(together[1], alone[0], rtol=1e-5, atol=1e-5)


def test_unnormalised_pooling_is_the_masked_token_mean(tokenizer: object) -> None:
    encoder = tiny_bert()
    encoder.normalize = False
    tokens = tokenizer(["the cat", "the cat sat on a mat"], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = encoder(**tokens)
        hidden = encoder.transformer(**tokens).last_hidden_state
    length = int(tokens["attention_mask"][0].sum())
    torch.testing.assert_close(pooled[0], hidden[0, :length].mean(dim=0))


def test_quantize_bert_with_keyword_batches(tokenizer: object) -> None:
    encoder = tiny_bert()
    batches = sentence_batches(tokenizer, sentences(48), batch_size=16)
    assert len(batches) == 3 and set(batches[0]) >= {"input_ids", "attention_mask"}
    float_embeddings = embed(encoder, tokenizer, sentences(16, seed=1))
    qencoder = mixq.quantize(encoder, "fixed8", calibration_data=batches, progress=False)
    summary = mixq.describe(qencoder)
    # Every Linear of the encoder (Q, K, V, attention output, two FFN layers, per block).
    assert len(summary.layers) == 2 * 6
    quantized_embeddings = embed(qencoder, tokenizer, sentences(16, seed=1))
    cosine = torch.nn.functional.cosine_similarity(float_embeddings, quantized_embeddings)
    assert cosine.min() > 0.98, cosine  # 8-bit weights and activations barely move it


def test_four_bit_rows_move_the_embeddings_more_than_eight(tokenizer: object) -> None:
    encoder = tiny_bert()
    batches = sentence_batches(tokenizer, sentences(32), batch_size=16)
    reference = embed(encoder, tokenizer, sentences(16, seed=2))
    errors = {}
    for preset in ("fixed8", "fixed4"):
        qencoder = mixq.quantize(tiny_bert(), preset, calibration_data=batches, progress=False)
        moved = embed(qencoder, tokenizer, sentences(16, seed=2))
        errors[preset] = float((moved - reference).norm(dim=-1).mean())
    assert 0 < errors["fixed8"] < errors["fixed4"]


def test_load_minilm_names_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_minilm(tmp_path)


def write_stsb(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    header = (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    )
    lines = [header] + [f"{i}\tg\tf\ty\t0\ts\ts\t{a}\t{b}\t{s}" for i, (a, b, s) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_stsb_reads_pairs_and_distinct_sentences(tmp_path: Path) -> None:
    rows = [("a cat", "a dog", "1.5"), ("a dog", "the mat", "0.25"), ("a cat", "a cat", "5")]
    pairs = load_stsb(write_stsb(tmp_path / "dev.tsv", rows))
    assert pairs.first == ["a cat", "a dog", "a cat"]
    np.testing.assert_array_equal(pairs.scores, [1.5, 0.25, 5.0])
    assert pairs.sentences() == ["a cat", "a dog", "the mat"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sentence1\tsentence2\n", "no column"),
        ("sentence1\tsentence2\tscore\n", "no sentence pairs"),
        ("sentence1\tsentence2\tscore\na\tb\thigh\n", "not a number"),
    ],
)
def test_load_stsb_refuses_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_stsb(path)
    with pytest.raises(DataError, match="not found"):
        load_stsb(tmp_path / "missing.tsv")


def test_spearman_of_cosines_ranks_not_values() -> None:
    base = torch.tensor([[1.0, 0.0]] * 4)
    angles = torch.tensor([0.1, 0.5, 0.9, 1.3])  # cosine falls as the angle grows
    other = torch.stack([angles.cos(), angles.sin()], dim=1)
    assert spearman_of_cosines(base, other, np.array([4.0, 3.0, 2.5, 0.0])) == pytest.approx(1.0)
    assert spearman_of_cosines(base, other, np.array([0.0, 1.0, 2.0, 3.0])) == pytest.approx(-1.0)


class _TokenClassifier(torch.nn.Module):
    """Token ids in, logits out: the tensor batches the Hessian pass takes."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = tiny_bert()
        self.head = torch.nn.Linear(32, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(input_ids, torch.ones_like(input_ids)))


@pytest.mark.parametrize("mode", ["forward-over-reverse", "reverse-over-reverse"])
def test_hessian_traces_run_through_bert_attention(mode: str) -> None:
    # The fused attention kernel has no forward-mode AD and no double backward.
    from mixq.sensitivity import HutchinsonConfig, hutchinson_traces

    model = _TokenClassifier().eval()
    generator = torch.Generator().manual_seed(0)
    data = [(torch.randint(5, 64, (4, 10), generator=generator), torch.tensor([0, 1, 0, 1]))]
    config = HutchinsonConfig(min_probes=2, max_probes=2, probes_per_product=2, hvp_mode=mode)
    table = hutchinson_traces(model, data, config, progress=False)
    traces = [layer.trace for layer in table.layers.values()]
    assert len(traces) == 2 * 6 + 1 and all(np.isfinite(t) for t in traces)
