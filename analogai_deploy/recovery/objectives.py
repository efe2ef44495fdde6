"""What a recovery run minimises, per kind of package: one object the trainers call for every pass.

    cross_entropy   labelled data: images, or text classifiers on a labelled text:FILE (the seed's loss:
                    CE(z / T, y) with the feedback loops, plain CE without)
    cosine / mse    encoders without labels: 1 - cos (or the MSE) between the pooled sentence embedding and
                    the teacher's
    kl              classifiers and token models without labels: T^2 * KL(softmax(teacher / T) || softmax(z / T)),
                    per class (classifiers) or per real token position (causal / masked LMs, token classifiers:
                    tasks.output_kind "tokens")

The teacher is the package's clean weights with the noise off (a frozen digital copy made before training;
for a package distilled before, the weights it was distilled from: package.REFERENCE). recover writes the
teacher's weights into the new package, and certify's label-free metrics compare with them. Its outputs are
computed once for every training and validation sample where they are small (pooled embeddings, class
logits); a causal LM's logits (tokens x vocabulary per sample) are computed per batch instead. MSNAT's
feedback loops combine the tensors this objective reads (z = z0 - beta * sum gamma_j z_j) and fusion
averages the clients, whatever the loss: both wrap the distillation loss exactly as they wrap CE.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..metrics import batch_score, pooled, primary_output
from ..tasks import Record


class Objective:
    """Image classifiers: the model's logits, cross-entropy against labels, accuracy."""

    name = "cross_entropy"
    metric = "accuracy"  # what `score` sums per sample; the validation number model selection maximises
    text = False

    def forward(self, model: nn.Module, x) -> torch.Tensor:
        out = model(x)
        return out if isinstance(out, torch.Tensor) else primary_output(out)  # HF image classifiers return an output object

    def targets(self, x, y):
        return y

    def loss(self, z: torch.Tensor, y: torch.Tensor, x, temperature: float | None, reduction: str = "mean"
             ) -> torch.Tensor:
        """The loss of (combined) outputs `z` against targets `y`; `temperature` is the feedback loops' T
        (None without them)."""
        z = z.float()
        return F.cross_entropy(z / temperature if temperature else z, y, reduction=reduction)

    def score(self, z: torch.Tensor, y: torch.Tensor, x) -> torch.Tensor:
        return batch_score(self.metric, z, y)

    def describe(self) -> dict[str, Any]:
        return {"loss": self.name, "metric": self.metric, "labels": True}


class TextObjective(Objective):
    """Text packages: the model takes keyword inputs (input_ids, attention_mask, ...)."""

    text = True

    def __init__(self, loss: str, output: str, temperature: float, teacher: nn.Module | None = None,
                 causal: bool = False):
        self.name = loss
        self.output = output  # pooled | logits | tokens (tasks.output_kind)
        self.temperature = temperature
        self.teacher = teacher  # only when targets are computed per batch (token outputs)
        # per position, a causal LM's top-1 is its next token; a masked LM's or token classifier's is that position's
        self.metric = {"cross_entropy": "accuracy", "cosine": "cosine", "mse": "cosine",
                       "kl": "next_token_agreement" if output == "tokens" and causal else "agreement"}[loss]

    def forward(self, model: nn.Module, x: dict[str, torch.Tensor]) -> torch.Tensor:
        out = primary_output(model(**x))
        if self.output == "pooled":
            return pooled(out, x["attention_mask"])
        return out

    @torch.no_grad()
    def targets(self, x, y):
        if self.teacher is None:
            return y
        return self.forward(self.teacher, x).float()

    def _mask(self, x) -> torch.Tensor:
        return x["attention_mask"].float()

    def loss(self, z: torch.Tensor, y: torch.Tensor, x, temperature: float | None, reduction: str = "mean"
             ) -> torch.Tensor:
        z = z.float()
        if self.name == "cross_entropy":
            return super().loss(z, y, x, temperature, reduction)
        if reduction == "sum":
            return self.loss(z, y, x, temperature) * z.shape[0]
        if self.name == "cosine":
            return (1 - F.cosine_similarity(z, y, dim=-1)).mean()
        if self.name == "mse":
            return F.mse_loss(z, y)
        t = self.temperature
        kl = (F.log_softmax(y / t, -1).exp() * (F.log_softmax(y / t, -1) - F.log_softmax(z / t, -1))).sum(-1)
        if self.output == "tokens":
            m = self._mask(x)
            return t * t * (kl * m).sum() / m.sum().clamp_min(1)
        return t * t * kl.mean()

    def score(self, z: torch.Tensor, y: torch.Tensor, x) -> torch.Tensor:
        # token outputs: per sample, the share of its real positions that agree
        return batch_score(self.metric, z, y, self._mask(x) if self.output == "tokens" else None)

    def describe(self) -> dict[str, Any]:
        d = {"loss": self.name, "metric": self.metric, "labels": self.name == "cross_entropy", "output": self.output}
        if self.name != "cross_entropy":
            d["teacher"] = "the package's clean weights before recovery, noise off"
        if self.name == "kl":
            d["temperature"] = self.temperature
        return d


def choose(config: dict[str, Any], data, recipe) -> Objective:
    """The objective for this package and data; `recovery.distill.loss` picks one explicitly."""
    cfg = recipe.recovery.distill
    record = Record.of(config)
    if not record.text:
        if cfg.loss not in ("auto", "cross_entropy"):
            raise UsageError(f"recovery.distill.loss={cfg.loss} is for text packages; images train with labels",
                             "drop the override (auto)")
        return Objective()
    output = record.output
    labelled = data.labelled
    loss = cfg.loss
    if loss == "auto":
        if labelled and output == "logits":
            loss = "cross_entropy"
        else:
            loss = {"pooled": "cosine", "logits": "kl", "tokens": "kl"}[output]
    if loss == "cross_entropy":
        if output != "logits":
            raise UsageError(f"cross-entropy on labels needs a classifier; this package is {config.get('task')}",
                             "drop recovery.distill.loss (distillation is chosen), or convert with `num_classes`")
        if not labelled:
            raise UsageError(f"{data.spec} has no labels for cross-entropy",
                             "pass labelled text (text:FILE.jsonl with a label field) or use recovery.distill.loss=kl")
    elif loss in ("cosine", "mse") and output != "pooled":
        raise UsageError(f"recovery.distill.loss={loss} compares sentence embeddings (encoders); "
                         f"this package is {config.get('task')}", "use recovery.distill.loss=kl or auto")
    elif loss == "kl" and output == "pooled":
        raise UsageError("recovery.distill.loss=kl needs logits; this package is an encoder",
                         "use recovery.distill.loss=cosine, mse or auto")
    return TextObjective(loss, output, cfg.temperature, causal=record.causal_lm)


@torch.no_grad()
def attach_teacher(objective: Objective, model: nn.Module, data, device: torch.device) -> Any:
    """Give a distillation objective its teacher: a frozen digital copy of `model` (noise off). Small targets
    (pooled embeddings, class logits) are computed once and written into data.train / data.val."""
    if not isinstance(objective, TextObjective) or objective.name == "cross_entropy":
        return data
    from ..analog.convert import to_digital

    teacher = to_digital(copy.deepcopy(model)).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if objective.output == "tokens":
        objective.teacher = teacher
        return data
    out = copy.copy(data)
    for split in ("train", "val"):
        ds = getattr(data, split)
        rows = []
        for i in range(0, len(ds), 64):
            x, _ = ds.inputs(tuple(t[i:i + 64].to(device) for t in ds.tensors))
            rows.append(objective.forward(teacher, x).float().cpu())
        setattr(out, split, ds.with_target(torch.cat(rows)))
    return out


def _kl_on(d: dict[str, Any]) -> str:
    if d.get("output") != "tokens":
        return ""
    return "next-token " if d.get("metric") == "next_token_agreement" else "per-token "


def objective_line(objective, ds) -> str:
    """One line saying what the run minimises (printed by the CLI, recorded in config.json)."""
    d = objective.describe()
    if d["loss"] == "cross_entropy":
        return f"objective: cross-entropy on the labels of {ds.spec} (validation metric: {d['metric']})"
    what = {"cosine": "cosine on the pooled sentence embedding", "mse": "MSE on the pooled sentence embedding",
            "kl": f"KL on the {_kl_on(d)}logits at T={d.get('temperature')}"}
    return (f"objective: distillation from the package's clean weights before recovery (noise off), {what[d['loss']]}, "
            f"on {ds.spec} without labels (validation metric: {d['metric']})")
