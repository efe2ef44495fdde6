"""Recipes: typed, validated training configurations, loaded from YAML and patched by dotted overrides.

    recipes/msnat.yaml            shipped recipes (`analogai-deploy recipes list`)
    my_recipe.yaml                a user's own file (any path ending in .yaml / .yml)
    training.batch_size=256       an override; the seed's names work verbatim
    recovery.noise_4.act_inject.sigma=0.3

`recovery.noise_0 ... noise_{K-1}` are the K noise levels (one FI client each). The seed calls the
level `act_inject.sigma`; it is the relative weight-noise level of DESIGN.md (s = c * sigma * max|W|).

The sections: recipe_training.py (training, recovery), recipe_noise.py (noise, io); files and
overrides as dicts: recipe_yaml.py.

A recipe file may end with a `text:` section: the same keys, used instead for text packages (transformers).
The seed's constants are tuned for image CNNs; on a transformer its noise levels destroy the embedding
and its learning rate the weights (BENCHMARKS.md section 6), so a shipped recipe carries the levels and
rate that keep its method meaningful there. `load(..., text=True)` applies the section before the user's
overrides and marks the result `variant: text`; for image packages the section is checked and unused.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import _shipped
from .._config import StrictConfig
from ..errors import UsageError, unknown
from .recipe_noise import NoiseModelConfig, TrainIOConfig
from .recipe_training import NOISE_KEY, RecoveryConfig, TrainingConfig
from .recipe_yaml import apply_overrides, read_yaml

RECIPES_DIR = _shipped.shipped("recipes")  # in the wheel, or the source tree's recipes/
TEXT_SECTION = "text"


@dataclass(frozen=True)
class Recipe(StrictConfig):
    name: str = "custom"
    description: str = ""
    variant: Literal["", "text"] = ""  # "text": the file's `text:` section was applied (module docstring)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    noise: NoiseModelConfig = field(default_factory=NoiseModelConfig)
    io: TrainIOConfig = field(default_factory=TrainIOConfig)

    @property
    def clients(self) -> int:
        """MSNAT's clients a round trains: one per noise level with fusion injection (FI) on, else 1."""
        levels = len(self.recovery.noise)
        return levels if self.training.use_FI and levels > 1 else 1

    @property
    def passes(self) -> int:
        """Forward passes a step keeps for its backward: 1, plus one per feedback delta with FL on."""
        return 1 + (len(self.recovery.feedback.deltas) if self.training.use_FL else 0)

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

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "description": self.description,
               "training": self.training.to_dict(), "recovery": self.recovery.to_dict()}
        if self.variant:  # like the sections below: absent where unused, so the seed's recipes keep their hash
            out["variant"] = self.variant
        if self.hardware_noise:  # the seed's recipes keep their hash: the sections appear only when used
            out.update(noise=self.noise.to_dict(), io=self.io.to_dict())
        return out

    def summary(self) -> str:
        t, r = self.training, self.recovery
        if t.engine == "aihwkit_hwa":
            return f"aihwkit HWA training ({r.hwa.modifier} w_noise={r.hwa.w_noise}), {t.rounds} epochs"
        parts = [f"K={len(r.noise)} sigma={r.sigmas}", f"FI={'on' if self.clients > 1 else 'off'}",
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


def merge_section(base: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """`base` with `section`'s keys laid over it, nested dicts merged. Noise levels go as a set: a section
    that names any recovery.noise_K replaces all of them (K may differ)."""
    out = dict(base)
    for key, value in section.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            old = out[key]
            if key == "recovery" and any(NOISE_KEY.match(k) for k in value):
                old = {k: v for k, v in old.items() if not NOISE_KEY.match(k)}
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
        data, source = raw(name_or_path)
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
    try:
        return Recipe.from_dict(apply_overrides(copy.deepcopy(data), overrides or []))
    except UsageError as exc:
        if isinstance(name_or_path, Recipe) or source in shipped() or _from_overrides(data, exc):
            raise
        raise UsageError(f"{source}: {exc.message}", exc.hint) from None  # the user's file says it


def _from_overrides(data: dict[str, Any], exc: UsageError) -> bool:
    """Whether the overrides, not the file's own `data`, make `exc` (the file alone passes, or fails otherwise)."""
    try:
        Recipe.from_dict(data)
    except UsageError as alone:
        return alone.message != exc.message
    return True
