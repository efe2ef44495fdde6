"""The `hwa_aihwkit` engine: aihwkit's own hardware-aware training, the baseline users would otherwise pick.

The package's digital model goes on aihwkit tiles through the same mapping certify uses
(analog/tiles.py `to_aihwkit`: exactly the placement's modules, grouped and depthwise convs one
tile set per group, GPT-2 Conv1D and nn.MultiheadAttention projections included), with
TorchInferenceRPUConfig tiles (pure PyTorch, so it runs with every torch we support), a weight-noise
modifier applied in every training forward pass and output noise on the tiles, and trained with
`AnalogSGD`. After each epoch the trained weights come back through that mapping's inverse
(`tiles.from_aihwkit`) into the package's own analog-aware model, which is validated under noise exactly
like the MSNAT engine's models, so selection is comparable.

Checkpoints hold the digital weights, the optimizer state and the RNG state; a resume rebuilds the
tiles from those weights, so it is close to, not bitwise equal to, an uninterrupted run.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .._state import load_state
from ..analog.convert import to_digital
from ..errors import OperationFailed
from . import engine
from .objectives import Objective
from .recipe import Recipe

def rpu_config(recipe: Recipe):
    """The training tiles: aihwkit's PCM on its PyTorch tile with the recipe's weight modifier and output noise
    (devices.rpu_config, the one factory)."""
    from ..hardware.devices import DeviceConfig, IOSettings, WeightModifier
    from ..hardware.devices import rpu_config as build

    cfg = recipe.recovery.hwa
    device = DeviceConfig(name="PCM", io=IOSettings(out_noise=cfg.out_noise), tile="torch")
    return build(device, "torch", modifier=WeightModifier(cfg.modifier, cfg.w_noise))


class HwaTrainer:
    """Same interface as engine.Trainer: run(resume) -> engine.Result, output_model(result)."""

    def __init__(self, model: nn.Module, recipe: Recipe, data, state_dir: Path, *, identity: dict[str, str],
                 placement, progress: Callable[..., Any] | None = None,
                 on_round: Callable[[dict], None] | None = None, objective=None):
        try:
            from aihwkit.optim import AnalogSGD  # noqa: F401
        except Exception as exc:
            raise OperationFailed(f"the hwa_aihwkit recipe needs aihwkit: {type(exc).__name__}: {exc}",
                                  "install the tested pins: make install (torch 2.10.0 + aihwkit 1.1.0)") from None
        self.recipe, self.t = recipe, recipe.training
        self.objective = objective or Objective()  # cross-entropy, or distillation for text (objectives.py)
        self.model = model
        self.placement = placement  # config.json's record: what goes on tiles (never re-derived here)
        self.state_dir = Path(state_dir)
        self.identity = identity
        self.progress, self.on_round = progress, on_round
        self.device = engine.pick_device(self.t.device)
        self.mode = "aihwkit"
        self.model.to(self.device)
        self.train_batches = engine.Batches(data.train, self.t.batch_size, self.device)
        self.val_batches = engine.Batches(data.val, max(256, self.t.batch_size), self.device)
        self.round = 0
        self.best: dict[str, Any] = {}
        self.best_state: dict[str, torch.Tensor] = {}
        self.since_best = 0
        self.log: list[dict[str, Any]] = []
        self._build(model.state_dict())

    def _build(self, state: dict[str, torch.Tensor]) -> None:
        """Fresh aihwkit tiles from digital weights: the placement's modules, as certify maps them."""
        from aihwkit.optim import AnalogSGD

        from ..analog import tiles

        digital = copy.deepcopy(self.model)
        to_digital(digital)
        load_state(digital, state)
        self.analog, _ = tiles.to_aihwkit(digital, self.placement, rpu_config(self.recipe))
        self.analog.to(self.device)
        self.optimizer = AnalogSGD(self.analog.parameters(), lr=self.t.lr, momentum=self.t.momentum,
                                   weight_decay=self.t.weight_decay)
        self.optimizer.regroup_param_groups(self.analog)

    def _sync(self) -> None:
        """The tiles' trained weights -> the package's model, through the mapping's inverse."""
        from ..analog import tiles

        load_state(self.model, tiles.from_aihwkit(self.analog, self.placement))

    def run_round(self, bar=None) -> dict[str, Any]:
        start = time.perf_counter()
        lr = engine.lr_at(self.t, self.round)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.analog.train()
        g = torch.Generator().manual_seed(self.t.seed * 1_000_003 + self.round * 1009)
        total = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        obj = self.objective
        for x, y in self.train_batches.iterate(g):
            self.optimizer.zero_grad(set_to_none=True)
            y = obj.targets(x, y)
            z = obj.forward(self.analog, x)
            loss = obj.loss(z, y, x, None)
            loss.backward()
            self.optimizer.step()
            total += loss.detach() * len(y)
            correct += obj.score(z.detach(), y, x)
            if bar is not None:
                bar.update(1)
        n = self.train_batches.n
        stats = {"loss": total.item() / n, "acc": correct.item() / n}
        if not torch.isfinite(torch.tensor(stats["loss"])):
            raise OperationFailed(f"training diverged: loss is {stats['loss']} in epoch {self.round + 1}",
                                  engine.divergence_hint(self.state_dir, self.round))
        if bar is not None:
            bar.set_postfix(loss=f"{stats['loss']:.3g}", acc=f"{stats['acc']:.3f}", refresh=False)
        self._sync()
        entry: dict[str, Any] = {"round": self.round + 1, "lr": lr, "clients": [stats]}
        engine.close_round(self, self.model, entry, self._snapshot_best)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        self.log.append(entry)
        return entry

    def _snapshot_best(self) -> None:
        self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def save(self) -> None:
        tensors: dict[str, torch.Tensor] = {}
        for key, v in self.model.state_dict().items():
            tensors[f"model/{key}"] = v.detach().contiguous().cpu()
        for key, v in self.best_state.items():
            tensors[f"best/{key}"] = v.contiguous().cpu()
        opt = engine._flatten(self.optimizer.state_dict(), "opt0", tensors)
        tensors.update(engine._rng_state())
        meta = {"identity": self.identity, "round": self.round, "best": self.best, "since_best": self.since_best,
                "optimizers": [opt], "log": self.log, "mode": self.mode, "clients": 1}
        engine.write_checkpoint(self.state_dir, tensors, meta)

    def load(self) -> None:
        tensors, meta = engine.read_checkpoint(self.state_dir, self.identity, self.mode)
        state = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        load_state(self.model, state)
        self._build(self.model.state_dict())
        self.optimizer.load_state_dict(engine._unflatten(meta["optimizers"][0], tensors))
        self.best_state = {k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("best/")}
        self.best, self.since_best, self.log, self.round = meta["best"], meta["since_best"], meta["log"], meta["round"]
        engine._set_rng_state(tensors)

    def output_model(self, result: engine.Result) -> nn.Module:
        load_state(self.model, result.best_state)
        return self.model

    def run(self, resume: bool = False) -> engine.Result:
        with engine.cpu_threads(self.t.cpu_threads, self.model, self.device):
            return self._run(resume)

    def _run(self, resume: bool) -> engine.Result:
        start = time.perf_counter()
        if resume and engine.has_checkpoint(self.state_dir):
            self.load()
        else:
            torch.manual_seed(self.t.seed)
        resumed_from = self.round
        per_round = len(self.train_batches)
        bar = self.progress(total=self.t.rounds * per_round, initial=self.round * per_round, unit="step",
                            desc=self.recipe.name) if self.progress else None
        stopped = False
        try:
            while self.round < self.t.rounds:
                if self.t.patience and self.since_best >= self.t.patience:
                    stopped = True
                    break
                entry = self.run_round(bar)
                self.save()
                if bar is not None:
                    engine._postfix(bar, entry)
                if self.on_round:
                    self.on_round(entry)
        finally:
            if bar is not None:
                bar.close()
        return engine.Result(self.best_state, {}, self.best, self.round, self.mode, str(self.device), self.log,
                             stopped, time.perf_counter() - start, resumed_from)
