"""Validation under noise: the metric model selection and early stopping read, every round."""
from __future__ import annotations

import torch
from torch import nn

from . import msnat
from .batches import Batches
from .objectives import Objective

EVAL_SEED = 12345  # validation noise draws are the same every round and every run


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, sigma: float, draws: int = 1, seed: int = EVAL_SEED,
             objective: Objective | None = None) -> dict[str, float]:
    """The objective's metric ("acc": accuracy for classifiers on labels, else e.g. the cosine to the teacher)
    and loss at weight-noise level `sigma`, mean over `draws` noise draws.

    Runs in a forked RNG so validation never changes the training's random stream.
    """
    objective = objective or Objective()
    noise = msnat.NoiseControl(model)
    saved = noise.layers[0].analog.sigma if noise.layers else 0.0
    was_training = model.training
    model.eval()
    devices = [batches.device] if batches.device.type == "cuda" else []
    correct = torch.zeros((), device=batches.device)
    loss = torch.zeros((), device=batches.device)
    draws = draws if sigma > 0 else 1
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        noise.set(sigma)
        for _ in range(draws):
            for x, y in batches.iterate():
                y = objective.targets(x, y)
                z = objective.forward(model, x).float()
                correct += objective.score(z, y, x)
                loss += objective.loss(z, y, x, None, reduction="sum")
    noise.set(saved)
    model.train(was_training)
    n = batches.n * draws
    return {"acc": correct.item() / n, "loss": loss.item() / n}
