"""The trainers, by the mode config.json records: one interface (trainer.Trainer: run, output_model),
one run loop, chosen here from the recipe and the data.

    loop      MSNAT and its ablations: the K noise-level clients one after the other (loop.py)
    batched   the same K clients stacked into one model under vmap (batched.py; training.mode=batched)
    aihwkit   aihwkit's own hardware-aware training on its tiles (hwa.py; training.engine=aihwkit_hwa)
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from . import batched
from .batched import BatchedTrainer
from .hwa import HwaTrainer
from .loop import LoopTrainer
from .recipe import Recipe
from .trainer import Trainer

TRAINERS: dict[str, type[Trainer]] = {"loop": LoopTrainer, "batched": BatchedTrainer, "aihwkit": HwaTrainer}


def trainer_mode(recipe: Recipe, data) -> str:
    """Which trainer runs this recipe on this data (a name of TRAINERS)."""
    if recipe.training.engine == "aihwkit_hwa":
        return "aihwkit"
    return batched.resolve_mode(recipe, data)


def make_trainer(model: nn.Module, recipe: Recipe, data, state_dir: Path, **kwargs) -> Trainer:
    """The recipe's trainer on `model`. Keywords: identity (what a resume must match), placement (the package's
    record; the aihwkit trainer lays its tiles out by it), progress, on_round, objective."""
    return TRAINERS[trainer_mode(recipe, data)](model, recipe, data, state_dir, **kwargs)
