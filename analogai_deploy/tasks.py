"""What a package's model outputs, by its task: the one answer recover, certify and export read.

    logits   one row of class scores per input (image and sequence classifiers)
    tokens   scores over a vocabulary or classes at every token position (causal-lm, masked-lm,
             token-classification): compared position by position, never averaged over the sentence
    pooled   hidden states per token, pooled into one sentence embedding (encoders: feature-extraction)
"""
from __future__ import annotations

from typing import Any

OUTPUT_KINDS = ("logits", "tokens", "pooled")
#: tasks whose model scores every token position. masked-lm belongs here: a fill-mask model's output is a
#: distribution over the vocabulary at each position (MaskedLMOutput.logits, batch x tokens x vocab); it has no
#: last_hidden_state to export and no sentence-level meaning in the mean of its logits, so distillation matches
#: it per position, certify scores it per position and export writes those logits.
TOKEN_TASKS = ("causal-lm", "masked-lm", "token-classification")


def output_kind(config: dict[str, Any]) -> str:
    """The output kind (see the module docstring) of the package whose config.json is `config`."""
    task = str(config.get("task") or "")
    if task in TOKEN_TASKS:
        return "tokens"
    if task.endswith("classification"):
        return "logits"
    return "pooled"


def hf_output_name(config: dict[str, Any]) -> str:
    """The field of a transformers model's output that holds the output kind's tensor."""
    return "last_hidden_state" if output_kind(config) == "pooled" else "logits"
