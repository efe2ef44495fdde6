"""Scoring: a model's outputs over evaluation data, and the number a metric makes of them.

`run` and `score` score a whole evaluation set (certify); `batch_score` sums one metric over a batch, per
sample (recovery's validation, which model selection maximises).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .definitions import LM_METRICS, Scored


def primary_output(output: Any) -> torch.Tensor:
    """The tensor a metric looks at: logits, or the last hidden state of an encoder."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("logits", "last_hidden_state"):
        value = getattr(output, key, None)
        if value is None and isinstance(output, dict):
            value = output.get(key)
        if value is not None:
            return value
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise UsageError(f"cannot read a tensor out of the model's output ({type(output).__name__})")


def pooled(out: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, hidden) -> attention-masked mean over tokens, as sentence-transformers pools."""
    mask = attention_mask.unsqueeze(-1).to(out.dtype)
    return (out * mask).sum(1) / mask.sum(1).clamp_min(1)


def lm_rows(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """(batch, T, vocab) logits -> (batch, T-1, 2): greedy next token id, loss of the true next token."""
    logits = logits[:, :-1].float()
    nxt = input_ids[:, 1:]
    nll = torch.logsumexp(logits, -1) - logits.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
    return torch.stack([logits.argmax(-1).float(), nll], -1)


@torch.no_grad()
def run(model: nn.Module, data: Scored) -> torch.Tensor:
    """The model's outputs over the whole eval set, one row per sample (sentence embeddings for encoders)."""
    rows = []
    for batch in data.batches:
        if isinstance(batch, dict):
            out = primary_output(model(**batch))
            if data.kind == "lm":
                out = lm_rows(out, batch["input_ids"])
            elif data.kind == "tokens":  # per position top-1: the rows stay small whatever the vocabulary
                out = out.argmax(-1)
            elif out.dim() == 3:  # (batch, tokens, hidden): attention-masked mean, as sentence-transformers
                out = pooled(out, batch["attention_mask"])
        else:
            out = primary_output(model(batch))
        rows.append(out.reshape(out.shape[0], -1).float())
    return torch.cat(rows)


def score(metric: str, outputs: torch.Tensor, data: Scored, reference: torch.Tensor | None) -> float:
    """`metric` over a whole eval set: `outputs` and `reference` are `run`'s rows (token metrics pool every
    real position of the set)."""
    if metric == "accuracy":
        return (outputs.argmax(1) == data.labels).float().mean().item()
    if metric == "agreement" and data.kind == "tokens":
        mask = data.token_mask
        return ((outputs == reference).float() * mask).sum().item() / mask.sum().item()
    if metric == "agreement":
        return (outputs.argmax(1) == reference.argmax(1)).float().mean().item()
    if metric in LM_METRICS:
        out, ref = outputs.view(outputs.shape[0], -1, 2), reference.view(reference.shape[0], -1, 2)
        mask = data.token_mask
        if metric == "next_token_agreement":
            return ((out[..., 0] == ref[..., 0]).float() * mask).sum().item() / mask.sum().item()
        # exp(mean nll) / exp(mean nll of the digital model)
        return math.exp(((out[..., 1] - ref[..., 1]) * mask).sum().item() / mask.sum().item())
    return F.cosine_similarity(outputs, reference, dim=1).mean().item()


def batch_score(metric: str, z: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
    """`metric` summed over the samples of one batch: `z` the model's outputs, `target` the labels (accuracy)
    or the reference model's outputs; with a token `mask`, each sample counts the share of its real positions
    that agree."""
    if metric == "accuracy":
        return (z.argmax(1) == target).sum()
    if metric == "cosine":
        return F.cosine_similarity(z.float(), target, dim=-1).sum()
    same = (z.argmax(-1) == target.argmax(-1)).float()
    if mask is not None:
        return ((same * mask).sum(1) / mask.sum(1).clamp_min(1)).sum()
    return same.sum()
