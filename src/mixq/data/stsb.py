"""GLUE STS-B sentence pairs with gold similarity scores (0..5), and the standard metric:
Spearman correlation between the cosine similarity of the two embeddings and the score."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from mixq.errors import DataError


@dataclass(frozen=True)
class SentencePairs:
    first: list[str]
    second: list[str]
    scores: np.ndarray  # (N,) gold similarity, 0..5

    def sentences(self) -> list[str]:
        """Every distinct sentence, in first-seen order (distillation data)."""
        return list(dict.fromkeys(self.first + self.second))


def load_stsb(path: str | Path) -> SentencePairs:
    """Read a GLUE STS-B ``train.tsv`` or ``dev.tsv``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"STS-B file not found: {path}")
    first, second, scores = [], [], []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"sentence1", "sentence2", "score"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path} is not an STS-B file: no column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                scores.append(float(row["score"]))
            except (TypeError, ValueError):
                raise DataError(f"{path}:{line}: score {row['score']!r} is not a number") from None
            first.append(row["sentence1"])
            second.append(row["sentence2"])
    if not scores:
        raise DataError(f"{path} holds no sentence pairs")
    return SentencePairs(first, second, np.asarray(scores))


def spearman_of_cosines(first: torch.Tensor, second: torch.Tensor, scores: np.ndarray) -> float:
    """Spearman correlation of ``cos(first_i, second_i)`` with the gold scores."""
    cosine = torch.nn.functional.cosine_similarity(first, second, dim=-1)
    return float(spearmanr(cosine.numpy(), scores).statistic)


def sentence_batches(
    tokenizer: Any, sentences: list[str], batch_size: int, max_length: int = 128
) -> list[dict[str, torch.Tensor]]:
    """Tokenised batches (dicts of tensors) for calibration and distillation."""
    return [
        dict(
            tokenizer(
                sentences[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
        )
        for i in range(0, len(sentences), batch_size)
    ]
