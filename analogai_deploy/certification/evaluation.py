"""What a certificate measures: the evaluation inputs, the metric, and its statistics.

    accuracy               top-1 accuracy against labels (classifiers on labelled data: images, text:FILE with labels)
    agreement              top-1 agreement with the digital model (classifiers, no labels needed; models that
                           score every token (masked-lm, token-classification): per real token position)
    cosine                 cosine similarity of the outputs to the digital model's (encoders such as the MiniLM;
                           sentence embeddings = attention-masked mean of the last hidden state)
    next_token_agreement   causal LMs: share of (non-padding) positions whose greedy next token equals the
                           digital model's
    perplexity_ratio       causal LMs: perplexity of the analog model on the text / the digital model's
                           (1.0 = as good as digital; lower is better)

Every metric says which way is better (`Metric.higher_is_better`), so a gate's "drop" is the move in the
bad direction on whichever metric a certificate carries.
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


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    bounds: tuple[float, float]  # the range a value (and its CI) can take
    percent: bool  # shown as a percentage (fractions in [0, 1]); else as a plain number
    description: str

    def drop_pp(self, digital: float, ci95: list[float]) -> float:
        """How far the CI bound on the bad side lies from digital, in the bad direction, in percentage points
        (for a ratio: 100 x the ratio's rise)."""
        return 100.0 * (digital - ci95[0] if self.higher_is_better else ci95[1] - digital)

    def threshold(self, digital: float, max_drop_pp: float) -> float:
        """The worst value a gate of `max_drop_pp` admits."""
        return digital - max_drop_pp / 100.0 if self.higher_is_better else digital + max_drop_pp / 100.0

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        return f"{100 * value:.2f}%" if self.percent else f"{value:.4f}"


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", True, (0.0, 1.0), True, "top-1 accuracy against labels"),
    # label-free metrics compare with the reference: the digital model, or the one a package was distilled from
    Metric("agreement", True, (0.0, 1.0), True, "top-1 agreement with the reference model"),
    Metric("cosine", True, (-1.0, 1.0), True, "cosine similarity to the reference model's outputs"),
    Metric("next_token_agreement", True, (0.0, 1.0), True, "greedy next token equal to the reference model's"),
    Metric("perplexity_ratio", False, (0.0, math.inf), False, "perplexity / the reference model's perplexity"),
)}
METRIC_CHOICES = ("auto", *METRICS)
LM_METRICS = ("next_token_agreement", "perplexity_ratio")


def metric_info(name: str | None) -> Metric:
    """The Metric named `name` (unknown or missing names read as accuracy, as old certificates do)."""
    return METRICS.get(name or "accuracy", METRICS["accuracy"])


TEXT_DATA = ("sentences", "tokens")  # built-in label-free inputs; data/text.py adds corpus, text:FILE, generated:N
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
        raise UsageError(f"bad time {text!r}", "write times like 1s, 10min, 1h, 1d, 1w, 1y or plain seconds: `times=1s,1h,1d,1y`")
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
        raise UsageError("no times given", "e.g. `times=1s,1h,1d,1y`")
    parsed = sorted({parse_time(t)[1]: parse_time(t) for t in items}.values(), key=lambda p: p[1])
    return parsed


def stats(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """mean, sample std, Student-t 95% CI of the mean (clipped to the metric's range), min."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    if n > 1:
        from .precision import t_quantile

        half = t_quantile(0.975, n - 1) * std / math.sqrt(n)
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
    kind: str = "image"
    token_mask: torch.Tensor | None = None
    split: str | None = None  # which part of the data: test, heldout, all, built-in
    label_names: list[str] | None = None  # the classes' names in output order (labels.py), where known


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
def run(model: nn.Module, data: EvalSet) -> torch.Tensor:
    """The model's outputs over the whole eval set, one row per sample (sentence embeddings for encoders)."""
    rows = []
    for batch in data.batches:
        if isinstance(batch, dict):
            out = _primary(model(**batch))
            if data.kind == "lm":
                out = lm_rows(out, batch["input_ids"])
            elif data.kind == "tokens":  # per position top-1: the rows stay small whatever the vocabulary
                out = out.argmax(-1)
            elif out.dim() == 3:  # (batch, tokens, hidden): attention-masked mean, as sentence-transformers
                out = pooled(out, batch["attention_mask"])
        else:
            out = _primary(model(batch))
        rows.append(out.reshape(out.shape[0], -1).float())
    return torch.cat(rows)


def score(metric: str, outputs: torch.Tensor, data: EvalSet, reference: torch.Tensor | None) -> float:
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
    return torch.nn.functional.cosine_similarity(outputs, reference, dim=1).mean().item()


def _is_classifier(config: dict[str, Any]) -> bool:
    from ..labels import is_classifier

    return is_classifier(config)


def resolve_metric(metric: str, config: dict[str, Any], data: EvalSet) -> str:
    """The metric `metric` means for this package and eval set ('auto': the task's own)."""
    if metric not in METRIC_CHOICES:
        raise unknown("metric", metric, METRIC_CHOICES)
    lm = data.kind == "lm"
    classifier = _is_classifier(config)
    if metric == "auto":
        if lm:
            return "next_token_agreement"
        if data.kind == "tokens":
            return "agreement"
        if classifier:
            return "accuracy" if data.labels is not None else "agreement"
        return "cosine"
    if lm != (metric in LM_METRICS):
        if lm:
            raise UsageError(f"`metric={metric}` does not apply to a causal language model",
                             "use `metric=next_token_agreement` or `metric=perplexity_ratio`")
        raise UsageError(f"`metric={metric}` is for causal language models", "use `metric=auto`")
    if data.kind == "tokens":
        if metric != "agreement":
            raise UsageError(f"`metric={metric}` does not apply to a {config.get('task')} model (it scores every "
                             "token position)", "use `metric=agreement` (per-position top-1 agreement)")
        return metric
    if metric == "accuracy" and data.labels is None:
        if data.kind == "image":
            raise UsageError("accuracy needs labelled data", "use `metric=agreement` or cosine")
        raise UsageError(f"accuracy needs labelled data; {data.spec} has no labels",
                         "pass labelled text (`data=text:FILE.jsonl` with a label field) or use `metric=agreement`"
                         if classifier else "use `metric=cosine` (encoders)")
    if metric in ("accuracy", "agreement") and not classifier:
        raise UsageError(f"{metric} compares top-1 classes; this package is not a classifier", "use `metric=cosine`")
    return metric


def load_eval_set(package_path: Path, config: dict[str, Any], spec: str | None, *, seed: int = 0,
                  limit: int | None = None, model: nn.Module | None = None) -> EvalSet:
    """The test split of a dataset for image packages; for text ones the built-in sentences (default), random
    tokens, the shipped corpus's held-out part, a text file, or text the digital model generates."""
    inp = config["input"]
    if inp.get("kind") == "text":
        return _text_set(package_path, config, spec or "sentences", seed, limit, model)
    spec = spec or "digits"
    from ..data import load
    from ..data.text import is_text_spec

    if spec in TEXT_DATA or is_text_spec(spec):
        raise UsageError(f"`data={spec}` is for text packages; this package takes images", "use e.g. `data=digits`")
    from ..labels import align

    d = align(load(spec, input_shape=inp.get("shape")), config)  # numbered as the package numbers its classes
    x, y = _tensors(d.test, limit)
    batches = [x[i:i + BATCH] for i in range(0, len(x), BATCH)]
    return EvalSet(spec, batches, y, d.fingerprint if limit is None else _fingerprint(x, y), len(x), d.num_classes,
                   split="test", label_names=d.labels)


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


TEXT_BATCH = 32  # sentences per forward pass (a causal LM's logits are batch x tokens x vocab floats)


def _text_kind(config: dict[str, Any]) -> str:
    from ..tasks import output_kind

    kind = output_kind(config)
    if kind == "tokens" and str(config.get("task")) == "causal-lm":
        return "lm"  # scored against the next token (lm_rows)
    return kind


def _trained_on(config: dict[str, Any], spec: str) -> bool:
    """Was this package recovered on the text file `spec` names (the same contents, wherever it lies now)?
    Then only its test split is held out."""
    from ..data.text import file_sha256, parse

    data = config.get("data") or {}
    recorded = (data.get("text") or {}).get("file_sha256")
    path = parse(spec)[1]
    if recorded:
        return file_sha256(path) == recorded
    trained = str(data.get("spec") or "")
    return trained.startswith("text:") and Path(trained[5:]).resolve() == Path(path).resolve()


def _text_set(package_path: Path, config: dict[str, Any], spec: str, seed: int, limit: int | None,
              model: nn.Module | None) -> EvalSet:
    from ..data import text as text_data

    inp = config["input"]
    kind = _text_kind(config)
    names = inp.get("names") or ["input_ids", "attention_mask"]
    seq_len = int(inp.get("seq_len") or 32)
    labels = None
    classes = None
    label_names = None
    if spec == "sentences":
        tok = text_data.tokenizer_for(package_path)
        sentences = SENTENCES[:limit] if limit else SENTENCES
        batch = dict(zip(names, text_data.tokenize(tok, sentences, seq_len, names)))
        split = "built-in"
    elif spec == "tokens":
        n = limit or 64
        g = torch.Generator().manual_seed(seed)
        vocab = int(inp.get("vocab_size") or 1000)
        ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (n, seq_len), generator=g)  # skip special tokens
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if "token_type_ids" in names:
            batch["token_type_ids"] = torch.zeros_like(ids)
        batch = {k: batch[k] for k in names if k in batch}
        split = "built-in"
    elif text_data.is_text_spec(spec):
        kind_, _ = text_data.parse(spec)
        if kind_ == "text" and not _trained_on(config, spec):
            # the user's own held-out text: all of it (a file the package was recovered on: its test split only)
            tok = text_data.tokenizer_for(package_path)
            texts, raw = text_data.read_file(text_data.parse(spec)[1])
            if limit:
                texts, raw = texts[:limit], (raw[:limit] if raw else raw)
            batch = dict(zip(names, text_data.tokenize(tok, texts, seq_len, names)))
            if raw is not None:
                from ..labels import ids

                labels, label_names, classes = ids(raw, config, spec)
            split = "all"
        else:
            d = text_data.load(spec, package_path, config, model=model)
            rows = tuple(t[:limit] if limit else t for t in d.test.tensors)
            x, y = d.test.inputs(rows)
            batch, labels, classes, label_names = x, (y if d.labelled else None), d.num_classes, d.labels
            split = "heldout" if kind_ == "corpus" else "test"
        if labels is not None and not _is_classifier(config):
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
    if label_names is None and _is_classifier(config):
        from ..labels import names as package_names

        label_names = package_names(config)
    return EvalSet(spec, batches, labels, _fingerprint(*batch.values(), *extra), n, classes, kind, mask, split,
                   label_names)
