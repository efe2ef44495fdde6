"""The inputs a certificate runs on (and a mapping calibrates on), batched: `load_eval_set`.

Image packages: the test split of a dataset. Text packages: the built-in sentences (default), random tokens,
the shipped corpus's held-out part, a text file, or text the digital model generates (data/text.py).
The metrics that score these inputs are in metrics/.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..errors import UsageError
from ..provenance import sha256_file
from ..labels import align, is_classifier
from ..labels import ids as label_ids
from ..labels import names as package_names
from ..tasks import Record
from . import load
from .base import is_text_spec
from . import text as text_data

TEXT_DATA = ("sentences", "tokens")  # built-in label-free inputs; data/text.py adds corpus, text:FILE, generated:N
BATCH = 1024
#: what a row of `metrics.run` holds per sample (EvalSet docstring)
EvalKind = Literal["image", "pooled", "logits", "lm", "tokens"]
TEXT_BATCH = 32  # sentences per forward pass (a causal LM's logits are batch x tokens x vocab floats)

#: label-free text inputs: short, varied English sentences (the encoder sees real text, not noise)
SENTENCES = [
    "The cat sat quietly on the warm windowsill.",
    "Analog chips store weights as conductances of memory cells.",
    "A quick brown fox jumps over the lazy dog.",
    "The train to the airport leaves every twenty minutes.",
    "She planted tomatoes and basil in the garden this spring.",
    "Interest rates rose for the third time this year.",
    "The museum opens a new exhibition on ancient maps.",
    "Drink plenty of water when you run in hot weather.",
    "The committee will publish its report next week.",
    "He fixed the bicycle chain with a borrowed tool.",
    "Phase-change memory drifts slowly after programming.",
    "Our flight was delayed because of heavy fog.",
    "The recipe needs two eggs, flour and a pinch of salt.",
    "Children learn languages faster than most adults.",
    "The orchestra played the symphony without a conductor.",
    "A neural network maps inputs to outputs through layers.",
    "The river flooded the lower fields after the storm.",
    "Please send the signed contract before Friday.",
    "The telescope captured images of a distant galaxy.",
    "He apologised for arriving late to the meeting.",
    "Solar panels cover the roof of the new library.",
    "The bakery on the corner sells fresh bread at dawn.",
    "Volunteers cleaned the beach on Saturday morning.",
    "The software update fixed a bug in the login page.",
    "Mountains were covered with snow until late April.",
    "The detective found a clue under the carpet.",
    "Vaccines train the immune system to fight infection.",
    "The market was crowded with tourists and locals.",
    "She wrote her thesis on the history of printing.",
    "Electric cars are becoming cheaper every year.",
    "The puppy chewed through the garden hose.",
    "A good night's sleep improves memory and focus.",
]


@dataclass
class EvalSet:
    """The inputs a certificate runs on, batched; labels only for `accuracy`.

    kind: image, pooled (encoders: masked-mean sentence embeddings), logits (classifiers), lm (causal LMs:
    per position the greedy next token and the loss of the true next token) or tokens (masked-lm,
    token-classification: per position the top-1 class or token); token_mask marks real positions.
    """

    spec: str
    batches: list[dict[str, torch.Tensor] | torch.Tensor]
    labels: torch.Tensor | None
    fingerprint: str
    n: int
    num_classes: int | None
    kind: EvalKind = "image"
    token_mask: torch.Tensor | None = None
    split: Literal["test", "heldout", "all", "built-in"] | None = None  # which part of the data
    label_names: list[str] | None = None  # the classes' names in output order (labels.py), where known


def load_eval_set(package_path: Path, config: dict[str, Any], spec: str | None, *, seed: int = 0,
                  limit: int | None = None, model: nn.Module | None = None) -> EvalSet:
    """The test split of a dataset for image packages; for text ones the built-in sentences (default), random
    tokens, the shipped corpus's held-out part, a text file, or text the digital model generates."""
    if Record.of(config).text:
        return _text_set(package_path, config, spec or "sentences", seed, limit, model)
    spec = spec or "digits"
    if spec in TEXT_DATA or is_text_spec(spec):
        raise UsageError(f"`data={spec}` is for text packages; this package takes images", "use e.g. `data=digits`")
    d = align(load(spec, input_shape=config["input"].get("shape")), config)  # numbered as the package numbers its classes
    x, y = materialise(d.test, limit)
    batches = [x[i:i + BATCH] for i in range(0, len(x), BATCH)]
    return EvalSet(spec, batches, y, d.fingerprint if limit is None else fingerprint(x, y), len(x), d.num_classes,
                   split="test", label_names=d.labels)


def materialise(ds, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's (inputs, labels) as two tensors, its first `limit` samples where given."""
    tensors = getattr(ds, "tensors", None)
    if tensors is not None:
        x, y = tensors
    else:  # folder datasets: materialise once, so every repeat sees identical inputs without re-decoding
        n = len(ds) if limit is None else min(limit, len(ds))
        xs, ys = zip(*(ds[i] for i in range(n)))
        x, y = torch.stack(xs), torch.tensor(ys)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return x, y


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 over the tensors' bytes: which inputs a number was measured on."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _text_kind(config: dict[str, Any]) -> EvalKind:
    record = Record.of(config)
    if record.output == "tokens" and record.causal_lm:
        return "lm"  # scored against the next token (lm_rows)
    return record.output


def _trained_on(config: dict[str, Any], spec: str) -> bool:
    """Was this package recovered on the text file `spec` names (the same contents, wherever it lies now)?
    Then only its test split is held out."""
    data = config.get("data") or {}
    recorded = (data.get("text") or {}).get("file_sha256")
    path = text_data.parse(spec)[1]
    if recorded:
        return sha256_file(path) == recorded
    trained = str(data.get("spec") or "")
    return trained.startswith("text:") and Path(trained[5:]).resolve() == Path(path).resolve()


def _text_set(package_path: Path, config: dict[str, Any], spec: str, seed: int, limit: int | None,
              model: nn.Module | None) -> EvalSet:
    record = Record.of(config)
    kind = _text_kind(config)
    names, seq_len = record.input_names, record.seq_len
    labels = None
    classes = None
    label_names = None
    if spec == "sentences":
        tok = text_data.tokenizer_for(package_path, config)
        sentences = SENTENCES[:limit] if limit else SENTENCES
        batch = dict(zip(names, text_data.tokenize(tok, sentences, seq_len, names)))
        split = "built-in"
    elif spec == "tokens":
        n = limit or 64
        g = torch.Generator().manual_seed(seed)
        vocab = int(record.vocab_size or 1000)
        ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (n, seq_len), generator=g)  # skip special tokens
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if "token_type_ids" in names:
            batch["token_type_ids"] = torch.zeros_like(ids)
        batch = {k: batch[k] for k in names if k in batch}
        split = "built-in"
    elif is_text_spec(spec):
        kind_, _ = text_data.parse(spec)
        if kind_ == "text" and not _trained_on(config, spec):
            # the user's own held-out text: all of it (a file the package was recovered on: its test split only)
            tok = text_data.tokenizer_for(package_path, config)
            texts, raw = text_data.read_file(text_data.parse(spec)[1])
            if limit:
                texts, raw = texts[:limit], (raw[:limit] if raw else raw)
            batch = dict(zip(names, text_data.tokenize(tok, texts, seq_len, names)))
            if raw is not None:
                labels, label_names, classes = label_ids(raw, config, spec)
            split = "all"
        else:
            d = text_data.load(spec, package_path, config, model=model)
            rows = tuple(t[:limit] if limit else t for t in d.test.tensors)
            x, y = d.test.inputs(rows)
            batch, labels, classes, label_names = x, (y if d.labelled else None), d.num_classes, d.labels
            split = "heldout" if kind_ == "corpus" else "test"
        if labels is not None and not is_classifier(config):
            labels = label_names = None  # an encoder or LM has no classes to score labels against
    else:
        raise UsageError(f"text packages are certified on text, not {spec!r}",
                         "use `data=sentences` (built-in), corpus (shipped held-out English), text:FILE, "
                         "generated:N (causal LMs) or tokens (random token ids)")
    n = next(iter(batch.values())).shape[0]
    if n == 0:
        raise UsageError(f"{spec} gives no examples to certify on", "pass more text")
    batches = [{k: v[i:i + TEXT_BATCH] for k, v in batch.items()} for i in range(0, n, TEXT_BATCH)]
    mask = None
    if kind in ("lm", "tokens"):  # the real positions (lm: those that have a next token)
        full = batch["attention_mask"].float() if "attention_mask" in batch else torch.ones(n, seq_len)
        mask = full[:, 1:] if kind == "lm" else full
    extra = (labels,) if labels is not None else ()
    if label_names is None and is_classifier(config):
        label_names = package_names(config)
    return EvalSet(spec, batches, labels, fingerprint(*batch.values(), *extra), n, classes, kind, mask, split,
                   label_names)
