"""How a network's weights and signals are mapped onto analog tiles: one record, used by every stage.

    mapping = MappingConfig(weight_scaling="column", input_scaling="channel", output_scaling="column")
    cert = analogai_deploy.certify("runs/minilm", mapping=mapping)        # CLI: --weight-scaling column ...

config.json["mapping"] holds the complete MappingConfig a package was converted or trained for (plus,
under "io", the DAC / ADC / output-noise settings it was trained for); certify uses it unless the
command line overrides a field, and the certificate records the mapping that ran and which fields
were overridden. Fields left at None inherit (the package's value, then DEFAULTS).

  weight_scaling   tile: one scale per tile, its max|w| -> g_max (aihwkit weight_scaling_omega=1).
                   column: one scale per output column (aihwkit weight_scaling_columnwise=True), the
                   digital per-column factor every current chip design has after its ADCs.
  clip             weights clipped before programming: none; fixed (|w| <= clip_value, weight units);
                   layer_std (clip_value std of the whole layer, aihwkit's LAYER_GAUSSIAN); channel_std
                   (clip_value std per output channel, aihwkit-lightning's LAYER_GAUSSIAN_PER_CHANNEL).
  outliers         none, or digital: each Linear (and GPT-2 Conv1D) layer's tile weights (after the input
                   scaling) are clipped at outlier_std std of their output column, and the clipped-off part
                   - the few outlier weights, 0.6% of the MiniLM's at 3 std - is computed digitally beside
                   the tile (a sparse digital matmul, exact). The tile's max|w| per column, and with it every
                   weight's noise, shrinks; the sum stays the digital layer's. Convolutions and attention
                   projections keep all weights on tiles. outliers.py: the split and what it costs.
  input_range      dynamic: each input vector scaled by its own abs-max before the DAC (aihwkit's
                   ABS_MAX noise management); calibrated: one static range per layer, input_range_k
                   std of its inputs on calibration data (aihwkit pre_post.input_range, its
                   init_std_alpha rule), inputs beyond it clip; learned: one static range per layer,
                   learned in training (recipe io.input_range: learned, AFM's rule) and recorded by recover
                   in input_ranges {layer: range}; both engines set them on the tiles, inputs beyond clip.
  input_scaling    none, or channel: a per-input-channel digital scale s_j = max|x_j|^a / max|W_:j|^(1-a)
                   from calibration data (a = input_scaling_alpha), x_j / s_j before the DAC and
                   W_:j * s_j on the tile; exact in digital arithmetic (SmoothQuant's transform), it
                   moves activation outliers into the weights, where per-column scaling absorbs them.
  output_scaling   the digital correction after the ADC: tile = one drift-compensation gain per tile
                   (aihwkit GlobalDriftCompensation); column = one per output column
                   (PerColumnDriftCompensation), as chips with per-column affine correction do.
  calibration      data for the calibration pass (None: the train split of the certify dataset for
                   images; built-in sentences distinct from the evaluation ones for text).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .._config import ChoiceConfig, read_section
from ..errors import UsageError
from ..hardware.clipping import Clip, clamp, clip_bound
from ..hardware.devices import IOSettings

WeightScaling = Literal["tile", "column"]
InputRange = Literal["dynamic", "calibrated", "learned"]
InputScaling = Literal["none", "channel"]
OutputScaling = Literal["tile", "column"]
Outliers = Literal["none", "digital"]

#: the defaults (BENCHMARKS.md section "Mapping" measures each against the alternatives)
DEFAULTS: dict[str, Any] = {
    "weight_scaling": "column", "clip": "none", "clip_value": 3.0, "input_range": "dynamic",
    "input_range_k": 3.0, "input_scaling": "channel", "input_scaling_alpha": 0.4, "output_scaling": "tile",
    "calibration": None, "calibration_samples": 64, "outliers": "none", "outlier_std": 3.0,
}
#: what the toolkit did before mapping options existed (one scale per tile, nothing calibrated)
LEGACY: dict[str, Any] = {**DEFAULTS, "weight_scaling": "tile", "input_scaling": "none"}
MAPPING_FIELDS = tuple(DEFAULTS)


@dataclass(frozen=True)
class MappingConfig(ChoiceConfig):
    """The mapping options (module docstring); None = inherit (the package's value, then DEFAULTS).
    Choices are taken in any case, '-' for '_'.

    io: the DAC / ADC / output-noise settings a package was trained for (certify's default IO for it).
    input_ranges: the static input range per layer name that training learned (input_range: learned).
    """

    weight_scaling: WeightScaling | None = None
    clip: Clip | None = None
    clip_value: float | None = None
    input_range: InputRange | None = None
    input_range_k: float | None = None
    input_scaling: InputScaling | None = None
    input_scaling_alpha: float | None = None
    output_scaling: OutputScaling | None = None
    calibration: str | None = None
    calibration_samples: int | None = None
    outliers: Outliers | None = None
    outlier_std: float | None = None
    input_ranges: dict[str, float] | None = None
    io: IOSettings = field(default_factory=IOSettings)

    _choices = {name: name.replace("_", " ") for name in
                ("weight_scaling", "clip", "input_range", "input_scaling", "output_scaling", "outliers")}

    @classmethod
    def spelling(cls, name: str, value: Any) -> str:
        return str(value).lower().replace("-", "_")

    def __post_init__(self):
        if isinstance(self.io, dict):
            object.__setattr__(self, "io", IOSettings.from_dict(self.io, where="mapping.io."))
        self.set_choices()
        if self.clip_value is not None and self.clip_value <= 0:
            raise UsageError(f"clip_value must be > 0, got {self.clip_value}")
        if self.outlier_std is not None and self.outlier_std <= 0:
            raise UsageError(f"outlier_std must be > 0 (std multiples), got {self.outlier_std}")
        if self.input_range_k is not None and self.input_range_k <= 0:
            raise UsageError(f"input_range_k must be > 0 (std multiples), got {self.input_range_k}")
        if self.input_scaling_alpha is not None and not 0.0 <= self.input_scaling_alpha <= 1.0:
            raise UsageError(f"input_scaling_alpha must be in 0..1, got {self.input_scaling_alpha}")
        if self.input_ranges is not None:
            bad = [k for k, v in self.input_ranges.items() if not isinstance(v, (int, float)) or not v > 0]
            if bad:
                raise UsageError(f"input_ranges must map layer names to ranges > 0; {bad[0]!r} does not")
            object.__setattr__(self, "input_ranges", {str(k): float(v) for k, v in self.input_ranges.items()})
        if self.calibration_samples is not None and self.calibration_samples < 1:
            raise UsageError(f"calibration_samples must be >= 1, got {self.calibration_samples}")

    def given(self) -> dict[str, Any]:
        """The fields set here (not None), io included as its own set fields."""
        out = {k: getattr(self, k) for k in MAPPING_FIELDS if getattr(self, k) is not None}
        if self.input_ranges is not None:  # a record of training, not an option: no default, no flag
            out["input_ranges"] = dict(self.input_ranges)
        io = {k: v for k, v in self.io.to_dict().items() if v is not None}
        if io:
            out["io"] = io
        return out

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if d["input_ranges"] is None:  # absent unless learned: packages written before it keep their record
            del d["input_ranges"]
        return d

    def over(self, base: MappingConfig | dict[str, Any] | None) -> MappingConfig:
        """This config's set fields over `base` (a MappingConfig or config.json's dict), then DEFAULTS."""
        if isinstance(base, dict):
            base = MappingConfig.from_dict(base, where="mapping.")
        merged = {**DEFAULTS, **(base.given() if base else {})}
        mine = self.given()
        io = {**merged.pop("io", {}), **mine.pop("io", {})}
        merged.update(mine)
        return MappingConfig.from_dict({**merged, "io": io})

    def complete(self) -> MappingConfig:
        return self.over(None)

    @property
    def needs_calibration(self) -> bool:
        m = self.complete()
        return m.input_scaling == "channel" or m.input_range == "calibrated"

    def label(self) -> str:
        m = self.complete()
        parts = [f"{m.weight_scaling} scale"]
        if m.clip != "none":
            parts.append(f"clip {m.clip} {m.clip_value:g}")
        parts.append({"dynamic": "dynamic inputs", "calibrated": f"calibrated inputs {m.input_range_k:g} std",
                      "learned": "learned input ranges"}[m.input_range])
        if m.input_scaling == "channel":
            parts.append(f"channel input scaling a={m.input_scaling_alpha:g}")
        parts.append(f"{m.output_scaling} output correction")
        if m.outliers == "digital":
            parts.append(f"outliers beyond {m.outlier_std:g} std digital")
        return ", ".join(parts)


def package_mapping(config: dict[str, Any]) -> MappingConfig:
    """The mapping a package records; a package written before mapping options existed ran LEGACY."""
    block = read_section(config, "mapping", MappingConfig)
    if block is None:
        return MappingConfig.from_dict(LEGACY)
    return MappingConfig().over(block)


# -- applying a mapping to a digital model (both certify engines start from the result) -------------------


#: the placement kinds the digital side of a mapping acts on (weight [out, in, ...], input channels on dim
#: 1 or last); attention and GPT-2 Conv1D projections get the tile-level options only
MAPPED_KINDS = ("linear", "conv1d", "conv2d", "conv3d")


def mapped_layers(model, placement=None) -> list[tuple[str, Any]]:
    """(name, module) of the analog layers the clipping and calibration act on: the placement's
    linear / convolution entries (grouped convolutions: clipping only, see `calibrate`)."""
    from torch import nn

    if placement is None:
        kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
        return [(n, m) for n, m in model.named_modules() if type(m) in kinds]
    return [(e.name, model.get_submodule(e.name) if e.name else model) for e in placement.analog
            if e.kind in MAPPED_KINDS]


def _channel_view(linear: bool, ndim: int) -> list[int]:
    """The broadcast shape of a per-input-channel vector against a layer's input."""
    return [1] * (ndim - 1) + [-1] if linear else [1, -1] + [1] * (ndim - 2)


def sharers(model, module, w) -> list[str]:
    """The names of the other modules of `model` that hold the tensor `w` as a parameter (a tied LM head's
    weight is also the embedding table's)."""
    return [name for name, m in model.named_modules()
            if m is not module and any(p is w for p in m._parameters.values())]


def own_weight(model, module):
    """`module.weight`, made its own Parameter first if another module shares it (a tied LM head and
    embedding): the mapping changes what goes on the tiles, never the digital layer that shares it."""
    import torch

    w = module.weight
    if sharers(model, module, w):
        module.weight = torch.nn.Parameter(w.detach().clone(), requires_grad=w.requires_grad)
    return module.weight


def clip_weights(model, mapping: MappingConfig, layers: list | None = None) -> dict[str, float]:
    """Clip the analog layers' weights in place, by training's rule (hardware/clipping.py `clip_bound`: one bound
    per output channel is one per row of W, a column of the crossbar); returns the fraction clipped per layer."""
    import torch

    m = mapping.complete()
    out: dict[str, float] = {}
    if m.clip == "none":
        return out
    with torch.no_grad():
        for name, mod in layers if layers is not None else mapped_layers(model):
            w = own_weight(model, mod)
            flat = w.reshape(w.shape[0], -1)
            bound = clip_bound(flat, m.clip, m.clip_value)
            out[name] = float((flat.abs() > bound).float().mean())
            flat.copy_(clamp(flat, bound))
    return out


@dataclass
class Calibration:
    """Per analog layer: the per-input-channel scales s (x / s before the DAC) and the static input range."""

    scales: dict[str, Any] = field(default_factory=dict)
    linear: set[str] = field(default_factory=set)  # layers whose channels are the last input dimension
    ranges: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What the certificate keeps: the data it came from and a digest of every number (not the numbers)."""
        h = hashlib.sha256()
        for name in sorted(self.scales):
            h.update(name.encode() + self.scales[name].contiguous().numpy().tobytes())
        h.update(json.dumps(self.ranges, sort_keys=True).encode())
        out = {**self.data, "layers": len(self.scales) or len(self.ranges), "sha256": h.hexdigest()}
        if self.ranges:
            vals = sorted(self.ranges.values())
            out["input_range"] = {"min": vals[0], "median": vals[len(vals) // 2], "max": vals[-1]}
        if self.scales:
            ratios = sorted(float(s.max() / s.min().clamp(min=1e-12)) for s in self.scales.values())
            out["input_scale_ratio_max"] = ratios[-1]
        return out


def calibrate(model, batches: list, mapping: MappingConfig, data: dict[str, Any],
              layers: list | None = None) -> Calibration:
    """One pass of the (clipped) digital model over `batches`: per-channel max|x| and moments per layer.
    Grouped convolutions keep their inputs unscaled (a channel's scale would have to be one group's).
    Text batches count their real positions only (the attention mask), not the padding."""
    import torch

    m = mapping.complete()
    layers = [(n, mod) for n, mod in (layers if layers is not None else mapped_layers(model))
              if getattr(mod, "groups", 1) == 1]
    acc: dict[str, dict[str, Any]] = {}

    real = [None]  # the batch's attention mask: padded positions are not data (text packages)

    def hook(mod, args, name):
        x = args[0].detach().float()
        if real[0] is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(real[0].shape):
            x = x[real[0]]  # (tokens, channels): the real positions only
        c = x.dim() - 1 if type(mod) is torch.nn.Linear else 1  # the input-channel dimension
        dims = [d for d in range(x.dim()) if d != c]
        a = acc.setdefault(name, {"max": None, "sum": None, "sq": None, "n": 0})
        mx, s, sq = x.abs().amax(dims), x.sum(dims), (x * x).sum(dims)
        a["max"] = mx if a["max"] is None else torch.maximum(a["max"], mx)
        a["sum"] = s if a["sum"] is None else a["sum"] + s
        a["sq"] = sq if a["sq"] is None else a["sq"] + sq
        a["n"] += x.numel() // x.shape[c]

    handles = [mod.register_forward_pre_hook(lambda mod, args, n=name: hook(mod, args, n)) for name, mod in layers]
    try:
        with torch.no_grad():
            for batch in batches:
                mask = batch.get("attention_mask") if isinstance(batch, dict) else None
                real[0] = mask.bool() if mask is not None else None
                model(**batch) if isinstance(batch, dict) else model(batch)
    finally:
        for h in handles:
            h.remove()
    cal = Calibration(data=data, linear={n for n, mod in layers if type(mod) is torch.nn.Linear})
    for name, mod in layers:
        a = acc.get(name)
        if a is None:  # a layer the calibration inputs never reach keeps the identity mapping
            continue
        s = torch.ones_like(a["max"])
        if m.input_scaling == "channel":
            wmax = mod.weight.detach().abs().transpose(0, 1).reshape(a["max"].shape[0], -1).amax(1)
            alpha = m.input_scaling_alpha
            s = a["max"].clamp(min=1e-5) ** alpha / wmax.clamp(min=1e-5) ** (1 - alpha)
            s = torch.where((a["max"] > 0) & (wmax > 0), s, torch.ones_like(s))
            cal.scales[name] = s
        if m.input_range == "calibrated":
            # the std over every element of the scaled inputs x / s, from the per-channel moments
            n = max(a["n"], 1)
            mean = float((a["sum"] / s).sum()) / (n * s.numel())
            sq = float((a["sq"] / s**2).sum()) / (n * s.numel())
            std = math.sqrt(max(sq - mean * mean, 0.0))
            xmax = float((a["max"] / s).max())
            cal.ranges[name] = min(m.input_range_k * std, xmax) if std > 0 else max(xmax, 1.0)
    return cal


def learned_ranges(mapping: MappingConfig, names: set[str], cal: Calibration | None) -> Calibration:
    """input_range: learned - the calibration (or a new one) with each layer's range as training learned it
    (config.json mapping.input_ranges); a range for a layer `names` (the placement's analog layers) does
    not hold, or none at all, is refused (certify would simulate other tiles than were trained)."""
    m = mapping.complete()
    if not m.input_ranges:
        raise UsageError("input range 'learned' needs the ranges a recipe with io.input_range: learned records "
                         "in config.json (mapping.input_ranges); this package has none",
                         "recover with `recipe=afm`, or certify with `input_range=dynamic` or calibrated")
    unknown_layers = sorted(set(m.input_ranges) - names)
    if unknown_layers:
        raise UsageError(f"config.json's learned input ranges name layers this package maps to no tile: "
                         f"{', '.join(unknown_layers[:4])}", "recover the package again")
    cal = cal if cal is not None else Calibration(data={"spec": "learned in training (mapping.input_ranges)"})
    cal.ranges = dict(m.input_ranges)
    return cal


def apply_input_scaling(model, cal: Calibration) -> None:
    """W_:j *= s_j in place (the tile stores the scaled weights); `install` adds the x / s before the DAC."""
    import torch

    mods = dict(model.named_modules())
    with torch.no_grad():
        for name, s in cal.scales.items():
            w = own_weight(model, mods[name])
            w.mul_(s.view([1, -1] + [1] * (w.dim() - 2)))


def install(model, cal: Calibration) -> list:
    """Forward pre-hooks that divide each scaled layer's input by its s (a digital multiply before the DAC).

    By module name, so they go on whatever model holds the layers: aihwkit's converted one or the fast one."""
    mods = dict(model.named_modules())
    handles = []
    for name, s in cal.scales.items():
        inv, linear = 1.0 / s, name in cal.linear

        def pre(module, args, inv=inv, linear=linear):
            x = args[0]
            return (x * inv.to(x.dtype).view(_channel_view(linear, x.dim())), *args[1:])

        handles.append(mods[name].register_forward_pre_hook(pre))
    return handles
