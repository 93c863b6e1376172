"""SST-2 for the GLUE benchmark: the TSV loader (typed errors for bad files), seeded
token batches with labels for the trainer, a sentence classifier (mean-pooled encoder and
a linear head) and its accuracy."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mixq.data.epochs import epoch_generator
from mixq.errors import DataError


@dataclass(frozen=True)
class LabelledSentences:
    sentences: list[str]
    labels: list[int]  # 0 negative, 1 positive

    def head(self, count: int | None) -> LabelledSentences:
        """The first ``count`` (all for ``None``)."""
        if count is None:
            return self
        return LabelledSentences(self.sentences[:count], self.labels[:count])


def load_sst2(path: str | Path) -> LabelledSentences:
    """``sentence<TAB>label`` rows with a header, labels 0 or 1 (GLUE's SST-2 format).

    Raises:
        DataError: the file is missing, lacks a column, holds a label other than 0/1 or an
            empty sentence, or has no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SST-2 file not found: {path}")
    sentences: list[str] = []
    labels: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            missing = {"sentence", "label"} - set(reader.fieldnames or ())
            if missing:
                raise DataError(f"{path} is not an SST-2 file: no column(s) {sorted(missing)}")
            for line, row in enumerate(reader, start=2):
                label = (row["label"] or "").strip()
                if label not in ("0", "1"):
                    raise DataError(f"{path}:{line}: label {row['label']!r} is not 0 or 1")
                sentence = (row["sentence"] or "").strip()
                if not sentence:
                    raise DataError(f"{path}:{line}: empty sentence")
                sentences.append(sentence)
                labels.append(int(label))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from None
    if not sentences:
        raise DataError(f"{path} holds no sentences")
    return LabelledSentences(sentences, labels)


class TokenBatches:
    """Dict batches (``input_ids``, ``attention_mask``, ``labels``) of ``data``, in a
    random order that is a function of ``(seed, epoch)`` when ``shuffle`` (the trainer
    calls :meth:`set_epoch`), so a resumed run sees the batches an uninterrupted one would."""

    def __init__(
        self,
        tokenizer: Any,
        data: LabelledSentences,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        max_length: int = 64,
    ) -> None:
        self.tokenizer = tokenizer
        self.data = data
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.max_length = max_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.data.labels) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        count = len(self.data.labels)
        order = (
            torch.randperm(count, generator=epoch_generator(self.seed, self.epoch)).tolist()
            if self.shuffle
            else list(range(count))
        )
        for start in range(0, count, self.batch_size):
            picked = order[start : start + self.batch_size]
            tokens = self.tokenizer(
                [self.data.sentences[i] for i in picked],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            yield {
                "input_ids": tokens["input_ids"],
                "attention_mask": tokens["attention_mask"],
                "labels": torch.tensor([self.data.labels[i] for i in picked]),
            }


class SentenceClassifier(nn.Module):
    """Logits ``(B, classes)`` from a linear head on the mean-pooled (unnormalised)
    sentence embedding of ``encoder`` (a :class:`~mixq.models.sentence_encoder.SentenceEncoder`)."""

    def __init__(self, encoder: nn.Module, hidden: int, classes: int = 2) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.classifier(self.encoder(input_ids=input_ids, attention_mask=attention_mask))


@torch.no_grad()
def accuracy(model: nn.Module, batches: TokenBatches) -> float:
    """Fraction of ``batches`` whose argmax logit is the label."""
    model.eval()
    correct = total = 0
    for batch in batches:
        labels = batch.pop("labels")
        correct += int((model(**batch).argmax(dim=1) == labels).sum())
        total += int(labels.numel())
    return correct / total
