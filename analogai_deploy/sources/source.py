"""What every model source gives: the built digital model, how to rebuild it, and what it takes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import UsageError


@dataclass
class Source:
    model: nn.Module
    spec: dict[str, Any]  # JSON-able: how to rebuild the architecture (kind + its arguments)
    task: str  # "image-classification", "feature-extraction", "sequence-classification", ...
    input: dict[str, Any]  # {"kind": "image", "shape": [C, H, W]} or {"kind": "text", "names": [...], "seq_len": N}
    num_classes: int | None = None
    extra_files: dict[str, bytes] = field(default_factory=dict)  # e.g. tokenizer files, copied into the package
    tokenizer: dict[str, Any] | None = None  # config.json["tokenizer"] for text models (huggingface.py)


def parse_shape(value: str | list[int] | tuple[int, ...] | None) -> list[int] | None:
    """An image's input shape C,H,W from a list or a string ("3,32,32" or "3x32x32"); None stays None."""
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else ",".join(map(str, value))
    try:
        shape = [int(t) for t in text.replace("x", ",").split(",") if t.strip()]
    except ValueError:
        shape = []
    if len(shape) != 3 or min(shape) < 1:
        got = f"{len(shape)} number{'s' if len(shape) != 1 else ''}" if shape and min(shape) >= 1 else repr(value)
        raise UsageError(f"`input_shape` is an image's C,H,W (3 numbers >= 1), got {got}",
                         "write e.g. `input_shape=3,32,32`; a model that takes token ids is converted from a "
                         "Hugging Face folder (hf:FOLDER, with its tokenizer)")
    return shape


def example_input(inp: dict[str, Any], batch: int = 2) -> tuple[tuple, dict]:
    """(args, kwargs) for one forward pass at an input spec: zero images, or token ids of the recorded length."""
    import torch

    if inp.get("kind") == "text":
        seq = int(inp.get("seq_len") or 32)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, max(1, int(inp.get("vocab_size") or 2)), (batch, seq), generator=g)
        tensors = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        return (), {n: tensors[n] for n in inp.get("names") or ["input_ids", "attention_mask"] if n in tensors}
    x = torch.zeros(batch, *inp["shape"])
    names = inp.get("names")
    return ((), {names[0]: x}) if names else ((x,), {})
