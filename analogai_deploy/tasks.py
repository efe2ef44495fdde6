"""What a package's model takes and outputs: the one answer recover, certify and export read.

`Record.of(config)` is the typed view of a package's config.json that says it (text or images, which task,
which output kind); the output kind follows from the task:

    logits   one row of class scores per input (image and sequence classifiers)
    tokens   scores over a vocabulary or classes at every token position (causal-lm, masked-lm,
             token-classification): compared position by position, never averaged over the sentence
    pooled   hidden states per token, pooled into one sentence embedding (encoders: feature-extraction)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

OutputKind = Literal["logits", "tokens", "pooled"]
#: tasks whose model scores every token position. masked-lm belongs here: a fill-mask model's output is a
#: distribution over the vocabulary at each position (MaskedLMOutput.logits, batch x tokens x vocab); it has no
#: last_hidden_state to export and no sentence-level meaning in the mean of its logits, so distillation matches
#: it per position, certify scores it per position and export writes those logits.
TOKEN_TASKS = ("causal-lm", "masked-lm", "token-classification")


def output_kind(config: dict[str, Any]) -> OutputKind:
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


@dataclass(frozen=True)
class Record:
    """The typed view of a package's config.json (the dict every stage passes around), read once: what the
    model takes (`input_kind`, shape or token inputs) and what it gives (`task`, `output`)."""

    input_kind: str | None  # "image" or "text" (config.json input.kind)
    task: str | None
    output: OutputKind
    num_classes: int | None
    input_shape: tuple[int, ...] | None  # images: (C, H, W)
    seq_len: int  # text: tokens per example
    input_names: tuple[str, ...]  # text: the model's keyword inputs
    vocab_size: int | None  # text: the tokenizer's vocabulary, where recorded

    @classmethod
    def of(cls, config: dict[str, Any]) -> Record:
        inp = config.get("input") or {}
        shape = inp.get("shape")
        return cls(inp.get("kind"), config.get("task"), output_kind(config), config.get("num_classes"),
                   tuple(shape) if shape else None, int(inp.get("seq_len") or 32),
                   tuple(inp.get("names") or ("input_ids", "attention_mask")), inp.get("vocab_size"))

    @property
    def text(self) -> bool:
        """A text package: its model takes token ids (tokenised with the package's tokenizer)."""
        return self.input_kind == "text"

    @property
    def causal_lm(self) -> bool:
        return self.task == "causal-lm"
