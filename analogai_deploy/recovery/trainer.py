"""The one run loop every trainer shares (trainers.py names them): rounds until training.rounds or early
stopping, the best round on validation kept, a checkpoint after each round, a progress bar.

A trainer says how it trains a round (`train_round`), which model a round validates (`round_model`) and
what its checkpoint holds besides the optimizers and the progress (`model_tensors` / `load_models`).
Validation, model selection, the learning rate per round, the checkpoint's commit and the resume are here,
once, for all of them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .._state import load_state
from . import checkpoint, msnat
from .batches import Batches, pick_device
from .cpu import cpu_threads
from .memory import validation_batch
from .objectives import Objective
from .optim import lr_at
from .recipe import Recipe
from .validation import evaluate


@dataclass
class Result:
    best_state: dict[str, torch.Tensor]
    best_act_ranges: dict[str, torch.Tensor]
    best: dict[str, Any]
    rounds: int
    mode: str
    device: str
    log: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0
    resumed_from: int = 0  # rounds already done in the checkpoint this run continued (0 = fresh start)


class Trainer:
    """Runs one recipe on one model. `state_dir` holds the resumable checkpoint."""

    mode = ""  # the trainers.py name: recorded in config.json's training section and in the checkpoint

    def __init__(self, model: nn.Module, recipe: Recipe, data, state_dir: Path, *, identity: dict[str, str],
                 placement=None, progress: Callable[..., Any] | None = None,
                 on_round: Callable[[dict], None] | None = None, objective: Objective | None = None):
        self.recipe = recipe
        self.objective = objective or Objective()  # what the loss and the validation metric are (objectives.py)
        self.t = recipe.training
        self.r = recipe.recovery
        self.model = model  # the package's own model object: the selected state ends in it
        self.data = data
        self.state_dir = Path(state_dir)
        self.identity = identity  # recipe sha + input weights sha + data fingerprint: what a resume must match
        self.placement = placement  # config.json's record: what goes on tiles (never re-derived here)
        self.progress = progress
        self.on_round = on_round
        self.device = pick_device(self.t.device)
        self.train_batches = Batches(data.train, self.t.batch_size, self.device)
        self.val_batches = Batches(data.val, validation_batch(model, recipe, data), self.device)
        self.optimizers: list = []
        self.round = 0
        self.best: dict[str, Any] = {}
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_ranges: dict[str, torch.Tensor] = {}
        self.since_best = 0
        self.log: list[dict[str, Any]] = []

    # ---- what a trainer says ---------------------------------------------------------------------------
    def steps_per_round(self) -> int:
        raise NotImplementedError

    def train_round(self, bar) -> dict[str, Any]:
        """Train one round; returns the log entry's training part ("clients": their loss and metric, ...)."""
        raise NotImplementedError

    def round_model(self) -> nn.Module:
        """The model a round validates, and model selection keeps."""
        raise NotImplementedError

    def model_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Add the models' checkpoint tensors to `tensors`; returns what the checkpoint's meta adds."""
        raise NotImplementedError

    def load_models(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        raise NotImplementedError

    def snapshot_best(self) -> None:
        self.best_state = {k: v.detach().clone() for k, v in self.round_model().state_dict().items()}

    # ---- one round -------------------------------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def run_round(self, bar=None) -> dict[str, Any]:
        start = time.perf_counter()
        lr = lr_at(self.t, self.round)
        self.set_lr(lr)
        entry: dict[str, Any] = {"round": self.round + 1, "lr": lr, **self.train_round(bar)}
        self.close_round(self.round_model(), entry)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        self.log.append(entry)
        return entry

    def close_round(self, model: nn.Module, entry: dict[str, Any]) -> None:
        """Validate `model` (at the recipe's eval sigma and clean), count the round, keep the best round (model
        selection on validation, never test) and the rounds since it (early stopping)."""
        t, objective = self.t, self.objective
        val = evaluate(model, self.val_batches, t.eval_sigma, t.eval_draws, objective=objective)
        clean = evaluate(model, self.val_batches, 0.0, objective=objective)
        # "acc" keys hold the objective's metric (accuracy on labels; a cosine or an agreement when distilling)
        entry["val"] = {"acc": val["acc"], "loss": val["loss"], "sigma": t.eval_sigma, "clean_acc": clean["acc"]}
        if objective.metric != "accuracy":
            entry["val"]["metric"] = objective.metric
        self.round += 1
        if not self.best or val["acc"] > self.best["val_acc"]:
            self.best = {"round": self.round, "val_acc": val["acc"], "val_loss": val["loss"],
                         "val_sigma": t.eval_sigma, "val_clean_acc": clean["acc"]}
            if objective.metric != "accuracy":
                self.best["metric"] = objective.metric
            self.snapshot_best()
            self.since_best = 0
        else:
            self.since_best += 1

    def divergence_hint(self) -> str:
        return checkpoint.divergence_hint(self.state_dir, self.round)

    # ---- checkpoints -----------------------------------------------------------------------------------
    def save(self) -> None:
        tensors: dict[str, torch.Tensor] = {}
        extra = self.model_tensors(tensors)
        # every optimizer is kept (one per client in the loop, one over the stacked clients in batched mode)
        opts = [checkpoint.flatten(opt.state_dict(), f"opt{k}", tensors) for k, opt in enumerate(self.optimizers)]
        tensors.update(checkpoint.rng_state())
        meta = {"identity": self.identity, "round": self.round, "best": self.best, "since_best": self.since_best,
                "optimizers": opts, "log": self.log, "mode": self.mode, **extra}
        checkpoint.write_checkpoint(self.state_dir, tensors, meta)

    def load(self) -> None:
        tensors, meta = checkpoint.read_checkpoint(self.state_dir, self.identity, self.mode)
        self.load_models(tensors, meta)
        for k, opt in enumerate(self.optimizers):
            opt.load_state_dict(checkpoint.unflatten(meta["optimizers"][k], tensors))
        self.best, self.since_best, self.log, self.round = meta["best"], meta["since_best"], meta["log"], meta["round"]
        checkpoint.set_rng_state(tensors)

    def output_model(self, result: Result) -> nn.Module:
        """The selected (best validation) state in the package's own model object."""
        load_state(self.model, result.best_state)
        msnat.set_act_ranges(self.model, result.best_act_ranges, self.device)
        return self.model

    # ---- the whole run ---------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> Result:
        with cpu_threads(self.t.cpu_threads, self.model, self.device):
            return self._run(resume)

    def _run(self, resume: bool) -> Result:
        start = time.perf_counter()
        if resume and checkpoint.has_checkpoint(self.state_dir):
            self.load()
        else:
            torch.manual_seed(self.t.seed)
            if torch.cuda.is_available():
                torch.cuda.manual_seed_all(self.t.seed)
        stopped = False
        resumed_from = self.round
        per_round = self.steps_per_round()
        bar = self.progress(total=self.t.rounds * per_round, initial=self.round * per_round, unit="step",
                            desc=f"{self.recipe.name}") if self.progress else None
        try:
            while self.round < self.t.rounds:
                if self.t.patience and self.since_best >= self.t.patience:
                    stopped = True
                    break
                entry = self.run_round(bar)
                self.save()
                if bar is not None:
                    _postfix(bar, entry)
                if self.on_round:
                    self.on_round(entry)
        finally:
            if bar is not None:
                bar.close()
        return Result(self.best_state, self.best_ranges, self.best, self.round, self.mode, str(self.device),
                      self.log, stopped, time.perf_counter() - start, resumed_from)


def _postfix(bar, entry: dict[str, Any]) -> None:
    clients = entry["clients"]
    bar.set_postfix(round=entry["round"], loss=f"{sum(c['loss'] for c in clients) / len(clients):.3g}",
                    acc=f"{sum(c['acc'] for c in clients) / len(clients):.3f}",
                    val=f"{entry['val']['acc']:.3f}@{entry['val']['sigma']}")
