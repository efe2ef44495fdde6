"""The recipe ablation's plan: what a study trains (AblationConfig), its cells and their cache names.

A study is one (model, width) x recipes x seeds x budgets. Two budgets:
  seed:  each recipe as configured, the same number of rounds for every recipe;
  equal: every recipe gets the same number of forward+backward passes over the training set (an MSNAT round
         is 5 clients x 4 feedback passes = 20 passes, a vanilla round 1), so cheaper recipes train more rounds.
A cell whose rounds are the same under both budgets (msnat's, whose passes set the equal budget) is trained once.
Every finished cell is one JSON file in the cache folder, named by `cell_name` (ablation.py writes and reads it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .._config import StrictConfig
from ..errors import UsageError

RECIPES = ("vanilla", "single_noise", "msnat_no_fi", "msnat_no_fl", "msnat", "hwa_aihwkit", "afm")
Budget = Literal["seed", "equal"]
BUDGETS = get_args(Budget)
#: the seed's figure: accuracy vs aihwkit's per-MAC weight noise n_w (forward.w_noise, C++ tiles)
N_W = (0.0, 0.05, 0.10, 0.14, 0.20)
#: --gpu: train on cuda with larger batches; aihwkit certifies on the CPU. Untested: no GPU here.
GPU_ABLATION = {"device": "cuda", "batch_size": 256}


@dataclass(frozen=True)
class AblationConfig(StrictConfig):
    """What one study trains and certifies.

    models: built-in or torchvision names; width: resnet18_cifar's base width (None = the model's own).
    recipes: any recipe `recover` takes (a shipped name or a YAML path). rounds: the seed budget's rounds for
      every recipe; the equal budget gives every recipe `equal_passes` passes (None = the most passes any
      listed recipe makes in `rounds` rounds, i.e. msnat's).
    n_w: the weight-noise axis, certified at sweep_time; times: PCM drift points (n_w = 0), the package's
      own mapping. repeats: Monte Carlo repeats per point. limit: certify on at most this many test samples.
    """

    models: list[str] = field(default_factory=lambda: ["lenet", "mlp"])
    width: int | None = None
    recipes: list[str] = field(default_factory=lambda: list(RECIPES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budgets: list[Budget] = field(default_factory=lambda: list(BUDGETS))
    rounds: int = 20
    equal_passes: int | None = None
    data: str = "digits"
    input_shape: list[int] | None = None
    batch_size: int | None = None
    repeats: int = 10
    n_w: list[float] = field(default_factory=lambda: list(N_W))
    sweep_time: str = "1s"
    times: list[str] = field(default_factory=lambda: ["1s", "1d", "1y"])
    device: str = "auto"
    num_classes: int = 10
    limit: int | None = None

    def __post_init__(self):
        bad = [b for b in self.budgets if b not in BUDGETS]
        if bad:
            from ..errors import unknown

            raise unknown("budget", bad[0], BUDGETS)
        if self.rounds < 1 or self.repeats < 2 or not self.seeds or not self.recipes or not self.n_w:
            raise UsageError("rounds must be >= 1, repeats >= 2, and seeds, recipes and n_w non-empty")
        if self.sweep_time not in self.times:
            raise UsageError(f"sweep_time {self.sweep_time} must be one of the drift times {self.times}")
        if 0.0 not in self.n_w:
            raise UsageError("n_w must include 0 (the drift table's point at sweep_time)")

    def certify_settings(self) -> dict[str, Any]:
        """What a cached cell's numbers depend on besides its training: a cell certified otherwise is refused."""
        return {"data": self.data, "repeats": self.repeats, "n_w": list(self.n_w), "sweep_time": self.sweep_time,
                "times": list(self.times), "limit": self.limit}


def passes_per_round(recipe: str) -> int:
    """Forward+backward passes over the training set one round of `recipe` makes: epochs x `passes_per_batch`."""
    from ..recovery.recipe import load

    r = load(recipe)
    return r.training.epochs_per_round * passes_per_batch(r)


def passes_per_batch(r) -> int:
    """Forward+backward passes one mini-batch costs a resolved recipe `r`: FI clients x (1 + feedback deltas when
    FL is on) x 2 with SAM, + the adversarial attack's passes. aihwkit HWA: 1."""
    t, rec = r.training, r.recovery
    if t.engine == "aihwkit_hwa":
        return 1
    per_batch = r.passes * (2 if rec.optimizer.sam else 1)
    adv = rec.adversarial
    per_batch += (1 if adv.FGSM.use else 0) + (adv.PGD.steps if adv.PGD.use else 0)
    return r.clients * per_batch


def plan(cfg: AblationConfig) -> list[dict[str, Any]]:
    """Every (model, recipe, seed, budget) with its rounds and passes, in run order: seed by seed (the most
    informative first), cheapest first within a seed. Cells of equal rounds share one training run."""
    ppr = {r: passes_per_round(r) for r in cfg.recipes}
    equal = cfg.equal_passes or cfg.rounds * max(ppr.values())
    cells = []
    for model in cfg.models:
        for seed in cfg.seeds:
            tier = []
            for budget in cfg.budgets:
                for recipe in cfg.recipes:
                    rounds = cfg.rounds if budget == "seed" else max(1, equal // ppr[recipe])
                    tier.append({"model": model, "width": cfg.width, "recipe": recipe, "seed": seed,
                                 "budget": budget, "rounds": rounds, "passes": rounds * ppr[recipe],
                                 "passes_per_round": ppr[recipe]})
            tier.sort(key=lambda c: c["passes"] * (8 if c["recipe"] == "hwa_aihwkit" else 1))
            cells += tier
    order = {m: i for i, m in enumerate(cfg.models)}
    seeds = {s: i for i, s in enumerate(cfg.seeds)}
    return sorted(cells, key=lambda c: (seeds[c["seed"]], order[c["model"]]))  # stable: keeps cost order


def model_label(model: str, width: int | None) -> str:
    return f"{model}-w{width}" if width else model


def cell_name(cell: dict[str, Any]) -> str:
    return f"{model_label(cell['model'], cell['width'])}-{Path(cell['recipe']).stem}-s{cell['seed']}-r{cell['rounds']}"
