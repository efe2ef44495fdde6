"""Recipes: typed, validated training configurations, loaded from YAML and patched by dotted overrides.

    recipes/msnat.yaml            shipped recipes (`analogai-deploy recipes list`)
    my_recipe.yaml                a user's own file (any path ending in .yaml / .yml)
    training.batch_size=256       an override; the seed's names work verbatim
    recovery.noise_4.act_inject.sigma=0.3

`recovery.noise_0 ... noise_{K-1}` are the K noise levels (one FI client each). The seed calls the
level `act_inject.sigma`; it is the relative weight-noise level of DESIGN.md (s = c * sigma * max|W|).

A recipe file may end with a `text:` section: the same keys, used instead for text packages (transformers).
The seed's constants are tuned for image CNNs; on a transformer its noise levels destroy the embedding
and its learning rate the weights (BENCHMARKS.md section 6), so a shipped recipe carries the levels and
rate that keep its method meaningful there. `load(..., text=True)` applies the section before the user's
overrides and marks the result `variant: text`; for image packages the section is checked and unused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._config import StrictConfig
from .._shipped import shipped
from ..errors import UsageError, unknown
from ..provenance import sha256_json
from .adversarial import AdversarialConfig
from ..analog.qat import QuantConfig
from .sam import SamConfig

RECIPES_DIR = shipped("recipes")  # in the wheel, or the source tree's recipes/
_NOISE_KEY = re.compile(r"^noise_(\d+)$")
TEXT_SECTION = "text"
#: the times after programming noise.model=device trains for: certify's default grid
DEVICE_TIMES = ("1s", "1h", "1d", "1y")
ADAM_BETAS = (0.9, 0.999)  # torch's


@dataclass
class ActInject(StrictConfig):
    """sigma: relative weight-noise level of this client (the seed's name for it)."""

    sigma: float = 0.1

    def __post_init__(self):
        if self.sigma < 0:
            raise UsageError(f"act_inject.sigma must be >= 0, got {self.sigma}")


@dataclass
class NoiseLevel(StrictConfig):
    act_inject: ActInject = field(default_factory=ActInject)


def _dropped(level: Any) -> bool:
    """`noise_K=null`, `noise_K.act_inject=null` and `noise_K.act_inject.sigma=null` all drop level K."""
    if level is None:
        return True
    inject = level.get("act_inject", {}) if isinstance(level, dict) else {}
    return inject is None or (isinstance(inject, dict) and "sigma" in inject and inject["sigma"] is None)


@dataclass
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


@dataclass
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


@dataclass
class HwaConfig(StrictConfig):
    """aihwkit's own hardware-aware training (engine: aihwkit_hwa).

    modifier: aihwkit WeightModifierType applied to the weights in every training forward pass;
    w_noise: its std_dev (relative to the largest weight of a tile).
    """

    modifier: Literal["add_normal", "mult_normal", "pcm_noise"] = "add_normal"
    w_noise: float = 0.15
    out_noise: float = 0.04


@dataclass
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


@dataclass
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
        named = {int(m.group(1)): data.pop(k) for k in list(data) if (m := _NOISE_KEY.match(k))}
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
            out.noise = [NoiseLevel.from_dict(levels[k], where=f"{where}noise_{k}.") for k in sorted(levels)]
        return out

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        noise = d.pop("noise")
        return {**{f"noise_{k}": n for k, n in enumerate(noise)}, **d}

    @property
    def sigmas(self) -> list[float]:
        return [n.act_inject.sigma for n in self.noise]


@dataclass
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


@dataclass
class NoiseModelConfig(StrictConfig):
    """The training weight-noise model (hardware/noise.py); the defaults are the seed's.

    scale: tensor (s from max|W| of the whole layer, the seed) or channel (max|W| per output channel,
      as one weight scale per crossbar column maps them). model: gaussian (the seed) or pcm (aihwkit
      PCMLikeNoiseModel's programming-noise polynomial in the normalised conductance). MSNAT's sigmas
      scale either; or device (certify's whole PCM device: programming, drift with its compensation and read
      noise at a time after programming drawn from `times` per layer and pass; sigma 0.056 at c 0.7776 is the
      device itself, other sigmas scale its deviation). clip / clip_value: clip the weights in the forward pass (none, fixed: |w| <= value,
      layer_std / channel_std: value std per layer / output channel); certify then clips the same way.
    outliers / outlier_std: digital keeps each Linear layer's tile weights beyond outlier_std std of their
      output column off the tile, computed digitally beside it (the mapping's outliers; certify then does the
      same); none keeps every weight on the tiles.
    input_scaling: none (the seed) or package: train each linear / convolution layer as certify maps it with
      the package's per-channel input scaling (config.json mapping; W_:j * s_j on the tile, x_j / s_j before
      it), s calibrated once before training exactly as certify calibrates it.
    clip_when: forward (the clip acts on the weights each forward pass uses; certify then clips the same way)
      or step (the weights themselves are clipped after every optimizer step, as aihwkit-lightning's
      clip_weights; the package's weights then hold the bound and certify programs them as they are).
    slicing_factor: c in s = c * sigma * wmax; None = the package's (its weight / device bits). 1 makes
      sigma the noise std relative to wmax, as aihwkit(-lightning)'s weight modifiers define it.
    """

    scale: Literal["tensor", "channel"] = "tensor"
    model: Literal["gaussian", "pcm", "device"] = "gaussian"
    clip: Literal["none", "fixed", "layer_std", "channel_std"] = "none"
    clip_value: float = 3.0
    outliers: Literal["none", "digital"] = "none"
    outlier_std: float = 3.0
    input_scaling: Literal["none", "package"] = "none"
    times: list[str] = field(default_factory=lambda: list(DEVICE_TIMES))
    clip_when: Literal["forward", "step"] = "forward"
    slicing_factor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        # absent at their defaults: recipes written before them keep their hash
        for key, default in (("input_scaling", "none"), ("clip_when", "forward"), ("slicing_factor", None)):
            if d[key] == default:
                del d[key]
        if d["outliers"] == "none" and d["outlier_std"] == 3.0:
            del d["outliers"], d["outlier_std"]
        if d["times"] == list(DEVICE_TIMES):
            del d["times"]
        return d

    @property
    def seconds(self) -> tuple[float, ...]:
        """`times` in seconds after programming (the `device` model's draws)."""
        from ..metrics import parse_times

        return tuple(s for _, s in parse_times(self.times))

    def __post_init__(self):
        if self.clip_value <= 0:
            raise UsageError(f"noise.clip_value must be > 0, got {self.clip_value}")
        if self.outlier_std <= 0:
            raise UsageError(f"noise.outlier_std must be > 0 (std multiples), got {self.outlier_std}")
        if self.slicing_factor is not None and self.slicing_factor <= 0:
            raise UsageError(f"noise.slicing_factor must be > 0 (or null: the package's), got {self.slicing_factor}")
        if self.clip_when == "step" and self.clip == "none":
            raise UsageError("noise.clip_when=step clips the weights after each step, but noise.clip is none",
                             "set noise.clip (e.g. channel_std) or drop noise.clip_when")
        self.seconds  # bad times are refused here, with certify's message


@dataclass
class InputRangeConfig(StrictConfig):
    """The DAC's input range in training (io.input_range; aihwkit-lightning's pre_post.input_range names).

    mode: dynamic (each input vector scaled by its own abs-max, aihwkit's ABS_MAX noise management) or learned:
      one static range r per layer, a trained parameter. Its first init_from_data training batches set it to
      the running mean of init_std_alpha x the std of the layer's inputs (init_value before any); then it learns:
      inputs beyond +-r clip (no gradient), r gets the clipped inputs' gradient times r, plus decay x r while
      more than input_min_percentage of the inputs lie inside (it shrinks until about that share fits).
      Recover records each layer's r in config.json's mapping (input_range: learned), and certify uses them.
    """

    mode: Literal["dynamic", "learned"] = "dynamic"
    init_value: float = 3.0
    init_from_data: int = 500
    init_std_alpha: float = 18.0
    decay: float = 0.01
    input_min_percentage: float = 0.95

    def __post_init__(self):
        if self.init_value <= 0 or self.init_std_alpha <= 0 or self.decay < 0 or self.init_from_data < 0:
            raise UsageError("io.input_range: init_value and init_std_alpha must be > 0, decay and init_from_data >= 0")
        if not 0.0 < self.input_min_percentage <= 1.0:
            raise UsageError(f"io.input_range.input_min_percentage must be in (0, 1], got {self.input_min_percentage}")


@dataclass
class TrainIOConfig(StrictConfig):
    """The tile periphery in training (0 = off): dac_bits / adc_bits quantisation with straight-through
    gradients, out_noise Gaussian noise on every output (in units of input max x weight max, as aihwkit's
    out_noise), out_bound the ADC's range. Set them to certify's device (aihwkit: 7 / 9 bits, 0.06, 12).
    input_range: the input max the DAC divides by: dynamic per input vector, or learned per layer."""

    out_noise: float = 0.0
    dac_bits: int = 0
    adc_bits: int = 0
    out_bound: float = 12.0
    input_range: InputRangeConfig = field(default_factory=InputRangeConfig)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.input_range == InputRangeConfig():  # absent at its default: older recipes keep their hash
            del d["input_range"]
        return d

    def __post_init__(self):
        if self.out_noise < 0:
            raise UsageError(f"io.out_noise must be >= 0, got {self.out_noise}")
        for name in ("dac_bits", "adc_bits"):
            if not 0 <= getattr(self, name) <= 24:
                raise UsageError(f"io.{name} must be in 0..24 (0 = no quantisation), got {getattr(self, name)}")
        if self.out_bound <= 0:
            raise UsageError(f"io.out_bound must be > 0, got {self.out_bound}")


@dataclass
class Recipe(StrictConfig):
    name: str = "custom"
    description: str = ""
    variant: Literal["", "text"] = ""  # "text": the file's `text:` section was applied (module docstring)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    noise: NoiseModelConfig = field(default_factory=NoiseModelConfig)
    io: TrainIOConfig = field(default_factory=TrainIOConfig)

    @property
    def hardware_noise(self) -> bool:
        """Whether the recipe trains with anything but the seed's noise model."""
        return self.noise != NoiseModelConfig() or self.io != TrainIOConfig()

    def __post_init__(self):
        t, r = self.training, self.recovery
        if self.hardware_noise and t.engine == "aihwkit_hwa":
            raise UsageError("the noise and io sections configure this toolkit's training noise, not aihwkit_hwa's",
                             "use training.engine=msnat, or recovery.hwa for aihwkit's own")
        if self.hardware_noise and t.mode == "batched":
            raise UsageError("training.mode=batched draws the seed's noise model only",
                             "use training.mode=loop (or auto) with the noise / io sections")
        if t.engine == "aihwkit_hwa":
            if t.optimizer != "sgd":
                raise UsageError("the aihwkit_hwa engine trains with aihwkit's AnalogSGD",
                                 "set training.optimizer=sgd (momentum via training.momentum)")
            on = [n for n, v in (("training.use_FI", t.use_FI), ("training.use_FL", t.use_FL),
                                 ("recovery.optimizer.sam", r.optimizer.sam), ("recovery.qat", r.qat),
                                 ("recovery.adversarial.FGSM.use", r.adversarial.FGSM.use),
                                 ("recovery.adversarial.PGD.use", r.adversarial.PGD.use)) if v]
            if on:
                raise UsageError(f"the aihwkit_hwa engine does not combine with {', '.join(on)}",
                                 "set them to false, or use training.engine=msnat")

    def resolved(self) -> dict[str, Any]:
        return self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "description": self.description,
               "training": self.training.to_dict(), "recovery": self.recovery.to_dict()}
        if self.variant:  # like the sections below: absent where unused, so the seed's recipes keep their hash
            out["variant"] = self.variant
        if self.hardware_noise:  # the seed's recipes keep their hash: the sections appear only when used
            out.update(noise=self.noise.to_dict(), io=self.io.to_dict())
        return out

    def sha256(self) -> str:
        return sha256_json(self.resolved())

    def summary(self) -> str:
        t, r = self.training, self.recovery
        if t.engine == "aihwkit_hwa":
            return f"aihwkit HWA training ({r.hwa.modifier} w_noise={r.hwa.w_noise}), {t.rounds} epochs"
        parts = [f"K={len(r.noise)} sigma={r.sigmas}", f"FI={'on' if t.use_FI and len(r.noise) > 1 else 'off'}",
                 f"FL={'on' if t.use_FL else 'off'}", f"{t.rounds} rounds x {t.epochs_per_round} epoch",
                 f"{t.optimizer} lr {t.lr:g} batch {t.batch_size}"]
        extras = [n for n, on in (("SAM", r.optimizer.sam), ("FGSM", r.adversarial.FGSM.use),
                                  ("PGD", r.adversarial.PGD.use), ("QAT", r.qat)) if on]
        if self.hardware_noise:
            n, io = self.noise, self.io
            when = f" at {','.join(n.times)}" if n.model == "device" else ""
            what = f"{n.model} noise{when} per {n.scale}"
            if n.clip != "none":
                what += f", clip {n.clip} {n.clip_value:g}"
            if n.outliers == "digital":
                what += f", outliers > {n.outlier_std:g} std digital"
            if n.clip_when == "step":
                what += " after every step"
            if io.out_noise or io.dac_bits or io.adc_bits:
                what += f", io dac {io.dac_bits} adc {io.adc_bits} out_noise {io.out_noise:g}"
            if io.input_range.mode == "learned":
                what += ", learned input ranges"
            extras.append(what)
        return ", ".join(parts + extras)


def shipped() -> dict[str, Path]:
    """name -> file of every recipe shipped in recipes/."""
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


MAX_BYTES = 1 << 20  # a recipe is a few kB
MAX_NODES = 10_000  # values after YAML aliases are expanded; an alias bomb reaches billions


def check_size(data: Any, where: str) -> Any:
    """Refuse YAML whose aliases expand to a huge (or self-referencing) structure before anything walks it."""
    stack, seen = [data], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise UsageError(f"{where} expands to more than {MAX_NODES} values (YAML aliases?)",
                             "write the recipe out without anchors and aliases (&name / *name)")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        if path.stat().st_size > MAX_BYTES:
            raise UsageError(f"{path} is {path.stat().st_size} bytes; a recipe is a few kB",
                             "pass a recipe YAML file (see `analogai-deploy recipes show msnat`)")
        data = check_size(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
    except FileNotFoundError:
        raise UsageError(f"recipe file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a folder, not a recipe file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text file", "pass a recipe YAML file") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}", "fix the file's syntax") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a mapping of recipe sections", "see `analogai-deploy recipes show msnat`")
    return data


def raw(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    """The recipe's YAML as a dict, and where it came from (a shipped name or a file path)."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith((".yaml", ".yml")) or path.is_file():
        data = read_yaml(path)
        data.setdefault("name", path.stem)
        return data, str(path)
    files = shipped()
    if text not in files:
        raise unknown("recipe", text, files)
    return read_yaml(files[text]), text


def parse_override(item: str) -> tuple[list[str], Any]:
    """'training.batch_size=256' -> (['training', 'batch_size'], 256); values are YAML scalars/lists."""
    import yaml

    key, sep, value = item.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key or any(not part for part in key.split(".")):
        raise UsageError(f"bad override {item!r}", "write dotted.key=value, e.g. training.batch_size=256")
    value = value.strip()
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    check_size(parsed, f"override {key}")
    if isinstance(parsed, str) and len(parsed) >= 2 and parsed[0] == parsed[-1] and parsed[0] in "'\"":
        parsed = parsed[1:-1]
    return key.split("."), parsed


def apply_overrides(data: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Patch nested dict `data` with dotted overrides (a list of 'k=v' strings or a {dotted: value} dict)."""
    items = [parse_override(o) for o in overrides] if isinstance(overrides, list) else [
        (k.split("."), v) for k, v in overrides.items()]
    for keys, value in items:
        node = data
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise UsageError(f"cannot set {'.'.join(keys)}: {'.'.join(keys[:i + 1])} is a value, not a section")
            node = nxt
        node[keys[-1]] = value
    return data


def merge_section(base: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """`base` with `section`'s keys laid over it, nested dicts merged. Noise levels go as a set: a section
    that names any recovery.noise_K replaces all of them (K may differ)."""
    out = dict(base)
    for key, value in section.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            old = out[key]
            if key == "recovery" and any(_NOISE_KEY.match(k) for k in value):
                old = {k: v for k, v in old.items() if not _NOISE_KEY.match(k)}
            out[key] = merge_section(old, value)
        else:
            out[key] = value
    return out


def _text_section(data: dict[str, Any]) -> dict[str, Any] | None:
    section = data.pop(TEXT_SECTION, None)
    if section is None:
        return None
    if not isinstance(section, dict) or not section:
        raise UsageError(f"the recipe's {TEXT_SECTION}: section must map recipe sections (training, recovery, "
                         "noise, io) to the values text packages use instead")
    if TEXT_SECTION in section or "variant" in section:
        raise UsageError(f"the recipe's {TEXT_SECTION}: section holds recipe sections, not {TEXT_SECTION}/variant")
    return section


def load(name_or_path: str | Path | Recipe = "msnat", overrides: list[str] | dict[str, Any] | None = None,
         *, text: bool = False) -> Recipe:
    """A validated Recipe from a shipped name or a YAML file, with dotted overrides applied.

    `text`: the package is a text model; the file's `text:` section (if any) is applied first. The section is
    validated either way, so a typo in it is reported on an image package too."""
    if isinstance(name_or_path, Recipe):
        if not overrides:
            return name_or_path
        data = name_or_path.to_dict()
    else:
        data, _ = raw(name_or_path)
    section = _text_section(data)
    if section is not None:
        with_text = merge_section(data, section)
        with_text["variant"] = TEXT_SECTION
        try:
            checked = Recipe.from_dict(with_text)
        except UsageError as exc:
            raise UsageError(f"in the recipe's {TEXT_SECTION}: section: {exc.message}", exc.hint) from None
        if text:
            data = checked.to_dict()
    return Recipe.from_dict(apply_overrides(data, overrides or []))
