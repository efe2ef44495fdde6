"""The recipe's `training:` and `recovery:` sections (recipe.py): the training loop, and what recovery does
(the MSNAT noise levels, fusion, feedback loops, SAM, adversarial training, QAT, aihwkit HWA, distillation)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .._config import StrictConfig
from ..analog.qat import QuantConfig
from ..errors import UsageError
from .adversarial import AdversarialConfig
from .sam import SamConfig

#: `recovery.noise_K`: the K noise levels, one FI client each (the seed's names)
NOISE_KEY = re.compile(r"^noise_(\d+)$")
ADAM_BETAS = (0.9, 0.999)  # torch's


@dataclass(frozen=True)
class ActInject(StrictConfig):
    """sigma: relative weight-noise level of this client (the seed's name for it)."""

    sigma: float = 0.1

    def __post_init__(self):
        if self.sigma < 0:
            raise UsageError(f"act_inject.sigma must be >= 0, got {self.sigma}")


@dataclass(frozen=True)
class NoiseLevel(StrictConfig):
    act_inject: ActInject = field(default_factory=ActInject)


def _dropped(level: Any) -> bool:
    """`noise_K=null`, `noise_K.act_inject=null` and `noise_K.act_inject.sigma=null` all drop level K."""
    if level is None:
        return True
    inject = level.get("act_inject", {}) if isinstance(level, dict) else {}
    return inject is None or (isinstance(inject, dict) and "sigma" in inject and inject["sigma"] is None)


@dataclass(frozen=True)
class FusionConfig(StrictConfig):
    """Multi-noise fusion injection: how the K clients' states are averaged each round.

    weights: a_k uniform (1/K, the reference) or proportional to each client's validation accuracy.
    momentum_broadcast: w_k <- keep * w_k + (1 - keep) * w instead of w_k <- w (reference keep = 0.1).
    """

    weights: Literal["uniform", "accuracy"] = "uniform"
    momentum_broadcast: bool = False
    keep: float = 0.1

    def __post_init__(self):
        if not 0.0 <= self.keep < 1.0:
            raise UsageError(f"fusion.keep must be in [0, 1), got {self.keep}")


@dataclass(frozen=True)
class FeedbackConfig(StrictConfig):
    """Multiple feedback loops: z = z0 - beta * sum_j gamma_j z_j, z_j at sigma + delta_j; loss CE(z / T, y)."""

    beta: float = 1e-3
    deltas: list[float] = field(default_factory=lambda: [0.05, 0.10, 0.15])
    gammas: list[float] = field(default_factory=lambda: [1.0, 0.1, 0.01])
    temperature: float = 4.0

    def __post_init__(self):
        if len(self.deltas) != len(self.gammas):
            raise UsageError(f"feedback.deltas ({len(self.deltas)}) and feedback.gammas ({len(self.gammas)}) "
                             "must have the same length", "give one gamma per feedback loop")
        if self.temperature <= 0:
            raise UsageError(f"feedback.temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class HwaConfig(StrictConfig):
    """aihwkit's own hardware-aware training (engine: aihwkit_hwa).

    modifier: aihwkit WeightModifierType applied to the weights in every training forward pass;
    w_noise: its std_dev (relative to the largest weight of a tile).
    """

    modifier: Literal["add_normal", "mult_normal", "pcm_noise"] = "add_normal"
    w_noise: float = 0.15
    out_noise: float = 0.04


@dataclass(frozen=True)
class DistillConfig(StrictConfig):
    """The loss for text packages (objectives.py); images always train with cross-entropy on labels.

    loss: auto = cross-entropy on labels for a classifier given labelled text; without labels distillation from
      the package's clean weights (the teacher, kept as its reference): cosine on the pooled embedding
      (encoders), KL on the logits (classifiers, causal LMs). Or name one: cross_entropy, cosine, mse, kl.
    temperature: T of the KL loss, T^2 * KL(softmax(teacher / T) || softmax(student / T)).
    """

    loss: Literal["auto", "cross_entropy", "cosine", "mse", "kl"] = "auto"
    temperature: float = 2.0

    def __post_init__(self):
        if self.temperature <= 0:
            raise UsageError(f"distill.temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class RecoveryConfig(StrictConfig):
    """What recovery does. `noise_0 ... noise_{K-1}` are read by `from_dict` (any K >= 1)."""

    noise: list[NoiseLevel] = field(default_factory=lambda: [NoiseLevel(ActInject(s)) for s in (0.10, 0.15, 0.20, 0.25, 0.30)])
    fusion: FusionConfig = field(default_factory=FusionConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    optimizer: SamConfig = field(default_factory=SamConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    qat: bool = False
    quant: QuantConfig = field(default_factory=QuantConfig)
    hwa: HwaConfig = field(default_factory=HwaConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "") -> RecoveryConfig:
        if data is not None and not isinstance(data, dict):
            return super().from_dict(data, where)  # refuses it, naming the valid keys
        data = dict(data or {})
        if "noise" in data:
            raise UsageError(f"write the noise levels as {where}noise_0, {where}noise_1, ... (the seed's names)")
        named = {int(m.group(1)): data.pop(k) for k in list(data) if (m := NOISE_KEY.match(k))}
        levels = {k: v for k, v in named.items() if not _dropped(v)}
        gaps = [k for k in range(max(levels, default=-1)) if k not in named]  # a dropped level is no gap
        if gaps:
            raise UsageError(f"noise levels must be {where}noise_0 ... noise_{len(levels) - 1} without gaps, "
                             f"got {', '.join(f'noise_{k}' for k in sorted(levels))}")
        if named and not levels:
            raise UsageError(f"every noise level ({where}noise_0 ... noise_{max(named)}) was dropped",
                             f"keep at least one; to train without noise set {where}noise_0.act_inject.sigma=0")
        try:
            out = super().from_dict(data, where)
        except UsageError as exc:
            if exc.message.endswith(f"in {cls.__name__}"):  # this level's keys: name the noise levels too
                exc.hint = (exc.hint or "").replace(", noise,", ",") + ", noise_0 ... noise_K"
            raise
        if levels:  # the levels left are renumbered in order: dropping noise_0 keeps noise_1 ... as the levels
            out = dataclasses.replace(out, noise=[NoiseLevel.from_dict(levels[k], where=f"{where}noise_{k}.")
                                                  for k in sorted(levels)])
        return out

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        noise = d.pop("noise")
        return {**{f"noise_{k}": n for k, n in enumerate(noise)}, **d}

    @property
    def sigmas(self) -> list[float]:
        return [n.act_inject.sigma for n in self.noise]


@dataclass(frozen=True)
class TrainingConfig(StrictConfig):
    """The training loop. One round = `epochs_per_round` epochs of every client, then fusion + validation.

    engine: msnat (this toolkit's loop: vanilla, single noise, MSNAT and its ablations) or aihwkit_hwa.
    eval_sigma / eval_draws: model selection and early stopping use the validation accuracy at this
      noise level, averaged over this many noise draws (fixed seed, so selection is deterministic).
    patience: stop after this many rounds without a better validation accuracy (0 = never).
    mode: how the K FI clients run: "loop" one after the other; "batched" as one stacked model
      (torch.func vmap over stacked parameters; plain MSNAT only: no SAM, adversarial or QAT);
      "auto" = loop (batched measured no faster on CPU for small models).
    cpu_threads: torch CPU threads while training; 0 = automatic: 1 for models under 1M parameters
      (their kernels are too small to split; extra threads only spin-wait), else torch's default.
    optimizer: adam, adamw (weight decay decoupled, as Hugging Face's Trainer) or sgd.
    adam_betas / adam_eps: Adam's (beta1, beta2) and epsilon. schedule: the learning rate per round (cosine,
      constant, step: /10 every third of the rounds, linear: down to 0). warmup: the first warmup x all the
      steps of the run ramp the learning rate up linearly from 0 (per step; 0 = none).
    """

    engine: Literal["msnat", "aihwkit_hwa"] = "msnat"
    rounds: int = 20
    epochs_per_round: int = 1
    batch_size: int = 64
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant", "step", "linear"] = "cosine"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    patience: int = 0
    use_FI: bool = True
    use_FL: bool = True
    mode: Literal["auto", "loop", "batched"] = "auto"
    eval_sigma: float = 0.2
    eval_draws: int = 3
    cpu_threads: int = 0
    adam_betas: list[float] = field(default_factory=lambda: list(ADAM_BETAS))
    adam_eps: float = 1e-8
    warmup: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        # absent at their defaults: recipes written before them keep their hash
        for key, default in (("adam_betas", list(ADAM_BETAS)), ("adam_eps", 1e-8), ("warmup", 0.0)):
            if d[key] == default:
                del d[key]
        return d

    def __post_init__(self):
        if len(self.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.adam_betas):
            raise UsageError(f"training.adam_betas must be two numbers in [0, 1), got {self.adam_betas}")
        if self.adam_eps <= 0 or not 0.0 <= self.warmup < 1.0:
            raise UsageError("training.adam_eps must be > 0 and training.warmup in [0, 1) (a share of all steps)")
        for name in ("rounds", "epochs_per_round", "batch_size", "eval_draws"):
            if getattr(self, name) < 1:
                raise UsageError(f"training.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UsageError(f"training.lr must be > 0, got {self.lr}")
        if self.patience < 0 or self.eval_sigma < 0 or self.cpu_threads < 0:
            raise UsageError("training.patience, training.eval_sigma and training.cpu_threads must be >= 0")
        if self.device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", self.device):
            raise UsageError(f"training.device must be auto, cpu or cuda[:N], got {self.device!r}")
