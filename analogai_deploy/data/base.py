"""What every dataset of data/ shares: the spec kinds, the one split, and the interface recover reads.

A dataset is three splits of one source, numbered the same way every time (the split never depends on the
training seed: the test set is the same for every run). Images (data.Data) and text (data.text.TextData)
both implement `SplitData`; recover and certify read only that.
"""
from __future__ import annotations

from typing import Any, ClassVar, Protocol

import torch
from torch.utils.data import Dataset

IMAGE_KINDS = ("digits", "cifar10", "mnist", "imagefolder")
TEXT_KINDS = ("corpus", "text", "generated")
SPLIT_SEED = 0
SPLIT = (0.7, 0.15, 0.15)


class SplitData(Protocol):
    """A dataset as recover trains on it: train / val / test splits and what they hold."""

    text: ClassVar[bool]  # token inputs (keyword tensors per sample), not images
    spec: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int | None  # None: no labels (text that recovery distils on)
    input_shape: list[int]  # [C, H, W] for images, [seq_len] for text
    fingerprint: str  # sha256 over what the test split holds
    labels: list[str] | None  # class names in id order, where known
    provenance: dict[str, Any]  # how the data was made (text: tokenizer, lengths, generation); recorded as is

    @property
    def labelled(self) -> bool: ...

    def example(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor] | None:
        """One training sample as model keyword arguments; None where a zero input of input_shape stands in."""


def is_text_spec(spec: str | None) -> bool:
    return bool(spec) and spec.split(":", 1)[0].strip().lower() in TEXT_KINDS


def _order(n: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()


def split(n: int, parts: tuple[float, float, float] = SPLIT) -> tuple[list[int], list[int], list[int]]:
    """Indices of the train, val and test splits of `n` samples in `parts` shares: every split holds at least
    one sample from 3 samples on (fewer: all of them are train, and the caller refuses the data)."""
    order = _order(n)
    if n < 3:
        return order, [], []
    a = min(max(1, int(parts[0] * n)), n - 2)
    b = min(a + max(1, int(parts[1] * n)), n - 1)
    return order[:a], order[a:b], order[b:]


def holdout(n: int, held: int) -> tuple[list[int], list[int]]:
    """Indices of `n` samples as (kept, held out): `held` of them, drawn the same way every time (a validation
    split taken from a dataset's own training part)."""
    order = _order(n)
    return order[held:], order[:held]
