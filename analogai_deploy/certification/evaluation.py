"""What a certificate measures: the evaluation inputs, the metric, and its statistics.

    accuracy    top-1 accuracy against labels (image classifiers on a labelled dataset)
    agreement   top-1 agreement with the digital model (classifiers, no labels needed)
    cosine      cosine similarity of the outputs to the digital model's (encoders such as the MiniLM;
                sentence embeddings = attention-masked mean of the last hidden state)
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UsageError, unknown

METRICS = ("auto", "accuracy", "agreement", "cosine")
TEXT_DATA = ("sentences", "tokens")
BATCH = 1024

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

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365 * 86400.0}


def parse_time(text: str | float | int) -> tuple[str, float]:
    """'1d' -> ('1d', 86400.0); '3600' -> ('3600s', 3600.0). Units: s, m/min, h, d, w, y (365 d)."""
    if isinstance(text, (int, float)):
        text = f"{text:g}"
    t = str(text).strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?(?:e[+-]?\d+)?)\s*(s|min|m|h|d|w|y)?", t)
    if not m:
        raise UsageError(f"bad time {text!r}", "write times like 1s, 10min, 1h, 1d, 1w, 1y or plain seconds: --times 1s,1h,1d,1y")
    value, unit = float(m.group(1)), m.group(2) or "s"
    seconds = value * _UNITS[unit]
    if not math.isfinite(seconds):  # '1e400' parses as inf
        raise UsageError(f"time {text!r} is too large", "write times like 1s, 1h, 1d, 1y or plain seconds")
    if seconds <= 0:
        raise UsageError(f"time {text!r} must be after programming (> 0 s)")
    return _label(seconds), seconds


def _label(seconds: float) -> str:
    """The largest unit that divides `seconds` exactly: 86400 -> '1d', 5400 -> '90min', 1.5 -> '1.5s'."""
    for unit in ("y", "d", "h", "min"):
        n = seconds / _UNITS[unit]
        if n >= 1 and abs(n - round(n)) < 1e-9:
            return f"{round(n)}{unit}"
    return f"{seconds:g}s"


def parse_times(times: str | list | tuple) -> list[tuple[str, float]]:
    items = [t for t in times.split(",") if t.strip()] if isinstance(times, str) else list(times)
    if not items:
        raise UsageError("no times given", "e.g. --times 1s,1h,1d,1y")
    parsed = sorted({parse_time(t)[1]: parse_time(t) for t in items}.values(), key=lambda p: p[1])
    return parsed


def stats(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """mean, sample std, Student-t 95% CI of the mean (clipped to the metric's range), min."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    if n > 1:
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    else:
        half = 0.0
    lo, hi = max(bounds[0], mean - half), min(bounds[1], mean + half)
    return {"mean": mean, "std": std, "ci95": [lo, hi], "min": min(values)}


def normalised(value: float, digital: float, num_classes: int | None) -> float | None:
    """Rasch et al. (2023): A = 1 - (err - err_FP) / (err_chance - err_FP); None when undefined."""
    if not num_classes or num_classes < 2:
        return None
    err, err_fp, err_chance = 1 - value, 1 - digital, 1 - 1 / num_classes
    if err_chance - err_fp <= 1e-9:  # the digital model is no better than chance
        return None
    return 1 - (err - err_fp) / (err_chance - err_fp)


@dataclass
class EvalSet:
    """The inputs a certificate runs on, batched; labels only for `accuracy`."""

    spec: str
    batches: list[dict[str, torch.Tensor] | torch.Tensor]
    labels: torch.Tensor | None
    fingerprint: str
    n: int
    num_classes: int | None


def _primary(output: Any) -> torch.Tensor:
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


@torch.no_grad()
def run(model: nn.Module, data: EvalSet) -> torch.Tensor:
    """The model's outputs over the whole eval set, one row per sample (sentence embeddings for encoders)."""
    rows = []
    for batch in data.batches:
        if isinstance(batch, dict):
            out = _primary(model(**batch))
            if out.dim() == 3:  # (batch, tokens, hidden): attention-masked mean, as sentence-transformers
                mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
                out = (out * mask).sum(1) / mask.sum(1).clamp_min(1)
        else:
            out = _primary(model(batch))
        rows.append(out.reshape(out.shape[0], -1).float())
    return torch.cat(rows)


def score(metric: str, outputs: torch.Tensor, data: EvalSet, reference: torch.Tensor | None) -> float:
    if metric == "accuracy":
        return (outputs.argmax(1) == data.labels).float().mean().item()
    if metric == "agreement":
        return (outputs.argmax(1) == reference.argmax(1)).float().mean().item()
    return torch.nn.functional.cosine_similarity(outputs, reference, dim=1).mean().item()


def resolve_metric(metric: str, config: dict[str, Any], data_spec: str) -> str:
    if metric not in METRICS:
        raise unknown("metric", metric, METRICS)
    text = config["input"].get("kind") == "text"
    classifier = bool(config.get("num_classes")) and str(config.get("task", "")).endswith("classification")
    if metric == "auto":
        if text:
            return "agreement" if classifier else "cosine"
        return "accuracy" if classifier else "cosine"
    if metric == "accuracy" and (text or data_spec in TEXT_DATA):
        raise UsageError("accuracy needs labelled data; text packages are certified label-free",
                         "use --metric agreement (classifiers) or --metric cosine (encoders)")
    if metric == "agreement" and not classifier:
        raise UsageError("agreement compares top-1 classes; this package is not a classifier", "use --metric cosine")
    return metric


def load_eval_set(package_path: Path, config: dict[str, Any], spec: str | None, *, seed: int = 0,
                  limit: int | None = None) -> EvalSet:
    """The test split of a dataset for image packages; built-in sentences or random tokens for text ones."""
    inp = config["input"]
    if inp.get("kind") == "text":
        return _text_set(package_path, inp, spec or "sentences", seed, limit)
    spec = spec or "digits"
    if spec in TEXT_DATA:
        raise UsageError(f"--data {spec} is for text packages; this package takes images", "use e.g. --data digits")
    from ..data import load

    d = load(spec, input_shape=inp.get("shape"))
    x, y = _tensors(d.test, limit)
    batches = [x[i:i + BATCH] for i in range(0, len(x), BATCH)]
    return EvalSet(spec, batches, y, d.fingerprint if limit is None else _fingerprint(x, y), len(x), d.num_classes)


def _tensors(ds, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
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


def _fingerprint(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _text_set(package_path: Path, inp: dict[str, Any], spec: str, seed: int, limit: int | None) -> EvalSet:
    if spec not in TEXT_DATA:
        raise UsageError(f"text packages are certified label-free on built-in inputs, not {spec!r}",
                         "use --data sentences (built-in sentence list) or --data tokens (random token ids)")
    names = inp.get("names") or ["input_ids", "attention_mask"]
    seq_len = int(inp.get("seq_len") or 32)
    if spec == "sentences":
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(package_path))
        except Exception as exc:
            raise UsageError(f"the package holds no usable tokenizer ({type(exc).__name__})",
                             "use --data tokens (random token ids) instead") from None
        sentences = SENTENCES[:limit] if limit else SENTENCES
        enc = tok(sentences, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
        batch = {k: enc[k] for k in names if k in enc}
    else:
        n = limit or 64
        g = torch.Generator().manual_seed(seed)
        vocab = int(inp.get("vocab_size") or 1000)
        ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (n, seq_len), generator=g)  # skip special tokens
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if "token_type_ids" in names:
            batch["token_type_ids"] = torch.zeros_like(ids)
    n = next(iter(batch.values())).shape[0]
    return EvalSet(spec, [batch], None, _fingerprint(*batch.values()), n, None)
