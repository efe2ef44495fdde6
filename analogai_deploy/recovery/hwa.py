"""The `hwa_aihwkit` engine: aihwkit's own hardware-aware training, the baseline users would otherwise pick.

The package's digital model goes on aihwkit tiles through the same mapping certify uses
(analog/tiles.py `to_aihwkit`: exactly the placement's modules, grouped and depthwise convs one
tile set per group, GPT-2 Conv1D and nn.MultiheadAttention projections included), with
TorchInferenceRPUConfig tiles (pure PyTorch, so it runs with every torch we support), a weight-noise
modifier applied in every training forward pass and output noise on the tiles, and trained with
`AnalogSGD`. After each epoch the trained weights come back through that mapping's inverse
(`tiles.from_aihwkit`) into the package's own analog-aware model, which is validated under noise exactly
like the MSNAT trainer's models (loop.py), so selection is comparable.

Its run loop and checkpoints are every trainer's (trainer.py). The checkpoint holds the digital weights,
the optimizer state and the RNG state; a resume rebuilds the tiles from those weights, so it is close to,
not bitwise equal to, an uninterrupted run.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._state import load_state
from ..analog.convert import to_digital
from ..errors import OperationFailed
from .recipe import Recipe
from .trainer import Trainer


def rpu_config(recipe: Recipe):
    """The training tiles: aihwkit's PCM on its PyTorch tile with the recipe's weight modifier and output noise
    (devices.rpu_config, the one factory)."""
    from ..hardware.devices import DeviceConfig, IOSettings, WeightModifier
    from ..hardware.devices import rpu_config as build

    cfg = recipe.recovery.hwa
    device = DeviceConfig(name="PCM", io=IOSettings(out_noise=cfg.out_noise), tile="torch")
    return build(device, "torch", modifier=WeightModifier(cfg.modifier, cfg.w_noise))


class HwaTrainer(Trainer):
    """aihwkit's tiles, laid out as config.json's placement says, trained with AnalogSGD."""

    mode = "aihwkit"

    def __init__(self, model: nn.Module, recipe: Recipe, data, state_dir: Path, **kwargs):
        try:
            from aihwkit.optim import AnalogSGD  # noqa: F401
        except Exception as exc:
            raise OperationFailed(f"the hwa_aihwkit recipe needs aihwkit: {type(exc).__name__}: {exc}",
                                  "install the tested pins: make install (torch 2.10.0 + aihwkit 1.1.0)") from None
        super().__init__(model, recipe, data, state_dir, **kwargs)
        if self.placement is None:
            raise ValueError("HwaTrainer needs the package's placement (placement=pkg.placement)")
        self.model.to(self.device)
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
        optimizer = AnalogSGD(self.analog.parameters(), lr=self.t.lr, momentum=self.t.momentum,
                              weight_decay=self.t.weight_decay)
        optimizer.regroup_param_groups(self.analog)
        self.optimizers = [optimizer]

    def _sync(self) -> None:
        """The tiles' trained weights -> the package's model, through the mapping's inverse."""
        from ..analog import tiles

        load_state(self.model, tiles.from_aihwkit(self.analog, self.placement))

    def steps_per_round(self) -> int:
        return len(self.train_batches)

    def round_model(self) -> nn.Module:
        return self.model

    def train_round(self, bar) -> dict[str, Any]:
        """One epoch on the tiles."""
        optimizer = self.optimizers[0]
        self.analog.train()
        g = torch.Generator().manual_seed(self.t.seed * 1_000_003 + self.round * 1009)
        total = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        obj = self.objective
        for x, y in self.train_batches.iterate(g):
            optimizer.zero_grad(set_to_none=True)
            y = obj.targets(x, y)
            z = obj.forward(self.analog, x)
            loss = obj.loss(z, y, x, None)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(y)
            correct += obj.score(z.detach(), y, x)
            if bar is not None:
                bar.update(1)
        n = self.train_batches.n
        stats = {"loss": total.item() / n, "acc": correct.item() / n}
        if not torch.isfinite(torch.tensor(stats["loss"])):
            raise OperationFailed(f"training diverged: loss is {stats['loss']} in epoch {self.round + 1}",
                                  self.divergence_hint())
        if bar is not None:
            bar.set_postfix(loss=f"{stats['loss']:.3g}", acc=f"{stats['acc']:.3f}", refresh=False)
        self._sync()
        return {"clients": [stats]}

    def model_tensors(self, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        for key, v in self.model.state_dict().items():
            tensors[f"model/{key}"] = v.detach().contiguous().cpu()
        for key, v in self.best_state.items():
            tensors[f"best/{key}"] = v.contiguous().cpu()
        return {"clients": 1}

    def load_models(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """The digital weights, then tiles built afresh from them (the optimizer state is loaded next)."""
        load_state(self.model, {k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        self._build(self.model.state_dict())
        self.best_state = {k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("best/")}
