"""The metrics a certificate can carry: what each means, which way is better, and which one a package and
its evaluation data call for."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..errors import UsageError, unknown
from ..labels import is_classifier


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


class Scored(Protocol):
    """What scoring reads of the evaluation data (data.eval_set.EvalSet is one)."""

    spec: str
    batches: list[dict[str, torch.Tensor] | torch.Tensor]
    labels: torch.Tensor | None
    kind: str  # image, pooled, logits, lm or tokens (data.eval_set.EvalKind)
    token_mask: torch.Tensor | None


def metric_info(name: str | None) -> Metric:
    """The Metric named `name` (unknown or missing names read as accuracy, as old certificates do)."""
    return METRICS.get(name or "accuracy", METRICS["accuracy"])


def resolve_metric(metric: str, config: dict[str, Any], data: Scored) -> str:
    """The metric `metric` means for this package and eval set ('auto': the task's own)."""
    if metric not in METRIC_CHOICES:
        raise unknown("metric", metric, METRIC_CHOICES)
    lm = data.kind == "lm"
    classifier = is_classifier(config)
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
