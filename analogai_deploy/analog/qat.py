"""Quantization-aware training: fake-quantized weights and layer inputs with a straight-through estimator.

    cfg = QuantConfig(w_bits=8, a_bits=8)
    qat.attach(model, cfg)                      # every analog layer now computes with quantized W and x
    ... train ...
    config["quantization"] = qat.describe(model, cfg).serialise()
    qat.restore(model, quant_record)             # package.load does this (quant_record: package.section)

Weights: symmetric, per output channel, scale = max|W_row| / (2^(w_bits-1) - 1), recomputed from the
current weights every forward (so nothing but the bit width needs saving). The output-channel axis is
dim 0 for Linear / Conv / MultiheadAttention projections and dim 1 for Hugging Face's Conv1D ([in, out]).
Activations: symmetric, per tensor, on each analog layer's input; the range act_max is an EMA (or the
running max) of max|x| over training batches and frozen in eval. act_max lives on the quantizer, not in
the state_dict, so model.safetensors stays the digital model's; `describe` / `restore` carry it.

Matching the tile (`match_tile: true`): aihwkit's IO defaults are a 7-bit DAC (inp_res = 1/(2^7 - 2))
and a 9-bit ADC (out_res = 1/(2^9 - 2)). aihwkit quantizes the input in steps of 2*bound*inp_res, i.e.
2^(n-1) - 1 levels per sign, exactly our symmetric n-bit grid, so a_bits takes the DAC's bits. The ADC
quantizes the tile's outputs, not its weights (conductances are analog), so w_bits keeps its value and
the ADC bits are recorded as `out_bits` for certify.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterable, Literal, get_args

import torch
from torch import nn

from .._config import StrictConfig
from ..errors import PackageError, UsageError
from . import registry
from .convert import analog_layers, noise_off
from .layers import AnalogMultiheadAttention

MIN_BITS, MAX_BITS = 2, 16
#: aihwkit 1.1.0 IOParameters defaults, used when aihwkit itself cannot be imported
TILE_DAC_BITS, TILE_ADC_BITS = 7, 9


ActRange = Literal["ema", "max"]


@dataclass(frozen=True)
class QuantConfig(StrictConfig):
    """Recipe section `recovery.quant` (switched on by `recovery.qat: true`).

    w_bits / a_bits: weight and layer-input bit widths, 2..16 (symmetric grids: 2^(b-1) - 1 levels per sign).
    act_range: "ema" = exponential moving average of max|x| per batch; "max" = running max over training.
    ema_momentum: weight of the newest batch in the EMA.
    match_tile: take a_bits from the certify tile's DAC (aihwkit default 7 bits); see the module doc.
    """

    w_bits: int = 8
    a_bits: int = 8
    act_range: ActRange = "ema"
    ema_momentum: float = 0.1
    match_tile: bool = False

    def __post_init__(self):
        for name in ("w_bits", "a_bits"):
            bits = getattr(self, name)
            if not MIN_BITS <= bits <= MAX_BITS:
                raise UsageError(
                    f"recovery.quant.{name} must be in {MIN_BITS}..{MAX_BITS}, got {bits}",
                    "a symmetric grid needs at least 2 bits (levels -1, 0, 1); e.g. recovery.quant."
                    f"{name}=8",
                )
        if self.act_range not in get_args(ActRange):
            raise UsageError(f"recovery.quant.act_range must be 'ema' or 'max', got {self.act_range!r}")
        if not 0.0 < self.ema_momentum <= 1.0:
            raise UsageError(f"recovery.quant.ema_momentum must be in (0, 1], got {self.ema_momentum}",
                             "e.g. recovery.quant.ema_momentum=0.1")


def tile_bits() -> tuple[int, int]:
    """(DAC bits, ADC bits) of aihwkit's default IO parameters: inp_res = 1/(2^n - 2) -> n."""
    try:
        from aihwkit.simulator.parameters.io import IOParameters

        io = IOParameters()
        return _res_bits(io.inp_res, TILE_DAC_BITS), _res_bits(io.out_res, TILE_ADC_BITS)
    except Exception:  # aihwkit absent or changed: its documented defaults
        return TILE_DAC_BITS, TILE_ADC_BITS


def _res_bits(res: float, default: int) -> int:
    if res <= 0:
        return default
    steps = 1 / res if res < 1 else res
    return int(round(math.log2(steps + 2)))


def resolve(cfg: QuantConfig) -> QuantConfig:
    """The bit widths QAT actually uses: with match_tile, a_bits is the tile DAC's."""
    if not cfg.match_tile:
        return cfg
    dac, _ = tile_bits()
    return replace(cfg, a_bits=dac)


def qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Forward q, backward identity to x."""
    return x + (q - x).detach()


class WeightQuantizer:
    """Symmetric per-output-channel fake quantization of a weight tensor (STE)."""

    def __init__(self, bits: int, axis: int = 0):
        self.bits = bits
        self.axis = axis

    def scale(self, w: torch.Tensor) -> torch.Tensor:
        dims = [d for d in range(w.dim()) if d != self.axis]
        amax = w.detach().abs().amax(dim=dims, keepdim=True) if dims else w.detach().abs()
        return amax.clamp_min(torch.finfo(w.dtype).tiny) / qmax(self.bits)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        s = self.scale(w)
        n = qmax(self.bits)
        return _ste(w, torch.round(w / s).clamp(-n, n) * s)


class ActQuantizer:
    """Symmetric per-tensor fake quantization of a layer input.

    In training the range act_max follows the batches (EMA or running max); in eval it is frozen.
    A quantizer that has never seen a batch quantizes each eval batch with that batch's own max.
    `owner` is the layer it belongs to (its train/eval mode decides whether the range moves).
    """

    def __init__(self, owner: nn.Module, bits: int, act_range: str = "ema", momentum: float = 0.1,
                 act_max: float | None = None):
        self.owner = owner
        self.bits = bits
        self.act_range = act_range
        self.momentum = momentum
        self.act_max: torch.Tensor | None = None if act_max is None else torch.tensor(float(act_max))
        self.frozen = False  # set while adversarial examples are generated (see `paused`)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        cur = x.detach().abs().amax().float()
        if self.act_max is None:
            self.act_max = cur
            return
        prev = self.act_max.to(cur.device)
        self.act_max = torch.maximum(prev, cur) if self.act_range == "max" else prev + self.momentum * (cur - prev)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return x  # token ids (embedding inputs) are not analog signals
        if self.owner.training and not self.frozen:
            self.observe(x)
        m = self.act_max if self.act_max is not None else x.detach().abs().amax()
        m = m.to(device=x.device, dtype=x.dtype).clamp_min(torch.finfo(x.dtype).tiny)
        s = m / qmax(self.bits)
        xc = torch.maximum(torch.minimum(x, m), -m)  # gradient 0 outside the range (clipped STE)
        return _ste(xc, torch.round(xc / s) * s)


def quantized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The analog layers QAT quantizes (every one); a model without any is refused."""
    layers = analog_layers(model)
    if not layers:
        raise UsageError("QAT needs an analog-aware model, but this one has no analog layers",
                         "convert the model first (analogai-deploy convert) or widen analog.include")
    return layers


def weight_axis(layer: nn.Module) -> int:
    """The output-channel axis of the layer's analog weights: 1 for HF Conv1D ([in, out]), else 0."""
    # an analog Conv1D exists only once the registry looked transformers up; a plain one may come first
    hf = registry.hf_conv1d(look_up=type(layer).__module__.startswith("transformers"))
    return 1 if hf is not None and isinstance(layer, hf[0]) else 0


def _takes_input_quant(layer: nn.Module) -> bool:
    # MultiheadAttention runs a fused kernel on query/key/value; only its weights are quantized.
    return not isinstance(layer, AnalogMultiheadAttention)


def attach(model: nn.Module, cfg: QuantConfig | None = None) -> QuantConfig:
    """Fake-quantize every analog layer's weights and inputs; returns the resolved config (bits used)."""
    cfg = resolve(cfg or QuantConfig())
    for _, layer in quantized_layers(model):
        layer.analog.weight_quant = WeightQuantizer(cfg.w_bits, weight_axis(layer))
        layer.analog.input_quant = (
            ActQuantizer(layer, cfg.a_bits, cfg.act_range, cfg.ema_momentum) if _takes_input_quant(layer) else None
        )
    return cfg


def detach(model: nn.Module) -> None:
    """Switch QAT off again (full-precision weights and inputs)."""
    for _, layer in analog_layers(model):
        layer.analog.weight_quant = None
        layer.analog.input_quant = None


def is_attached(model: nn.Module) -> bool:
    return any(layer.analog.weight_quant is not None for _, layer in analog_layers(model))


@contextmanager
def paused(model: nn.Module):
    """Keep activation ranges still (e.g. while adversarial inputs are searched for); quantization stays on."""
    quants = [l.analog.input_quant for _, l in analog_layers(model) if l.analog.input_quant is not None]
    saved = [q.frozen for q in quants]
    for q in quants:
        q.frozen = True
    try:
        yield
    finally:
        for q, f in zip(quants, saved):
            q.frozen = f


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Set every activation range to the max |input| seen over `batches` (noise off), then freeze-ready."""
    quants = [l.analog.input_quant for _, l in analog_layers(model) if l.analog.input_quant is not None]
    if not quants:
        raise UsageError("calibrate needs QAT attached first", "call qat.attach(model, cfg)")
    observed: dict[int, torch.Tensor] = {}
    hooks = []
    for q in quants:
        def hook(module, args, q=q):
            x = args[0]
            if torch.is_tensor(x) and x.is_floating_point():
                cur = x.detach().abs().amax().float()
                observed[id(q)] = torch.maximum(observed.get(id(q), cur), cur)
        hooks.append(q.owner.register_forward_pre_hook(hook))
    mode = model.training
    model.eval()
    try:
        with noise_off(model):
            for x in batches:
                model(x)
    finally:
        model.train(mode)
        for h in hooks:
            h.remove()
    for q in quants:
        if id(q) in observed:
            q.act_max = observed[id(q)]


@dataclass(frozen=True)
class QuantRecord(StrictConfig):
    """config.json's "quantization" section (`describe`): the QuantConfig trained with, the scheme in words,
    each quantized layer's frozen activation range and weight axis, and the tile's ADC bits where matched."""

    w_bits: int
    a_bits: int
    layers: dict[str, dict[str, Any]]
    act_range: ActRange = "ema"
    ema_momentum: float = 0.1
    match_tile: bool = False
    scheme: str = ""
    out_bits: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The section as `describe` wrote it before the envelope (certificates and export copy it)."""
        out = {"w_bits": self.w_bits, "a_bits": self.a_bits, "act_range": self.act_range,
               "ema_momentum": self.ema_momentum, "match_tile": self.match_tile, "scheme": self.scheme,
               "layers": self.layers}
        return out if self.out_bits is None else {**out, "out_bits": self.out_bits}


def describe(model: nn.Module, cfg: QuantConfig | None = None) -> QuantRecord:
    """The package config section "quantization" (read by package.load, export and certify)."""
    cfg = resolve(cfg or QuantConfig())
    layers: dict[str, dict[str, Any]] = {}
    for name, layer in quantized_layers(model):
        wq, aq = layer.analog.weight_quant, layer.analog.input_quant
        if wq is None:
            raise UsageError(f"layer {name!r} has no weight quantizer", "call qat.attach(model, cfg) before describe")
        act_max = None if aq is None or aq.act_max is None else round(float(aq.act_max), 8)
        layers[name] = {"act_max": act_max, "weight_axis": wq.axis}
    return QuantRecord(
        w_bits=cfg.w_bits, a_bits=cfg.a_bits, layers=layers, act_range=cfg.act_range, ema_momentum=cfg.ema_momentum,
        match_tile=cfg.match_tile,
        scheme="symmetric; weights per output channel (scale = max|W_row| / (2^(w_bits-1)-1)); "
               "inputs per tensor (scale = act_max / (2^(a_bits-1)-1))",
        # aihwkit is imported only here: it is slow to import
        out_bits=tile_bits()[1] if cfg.match_tile else None)


def restore(model: nn.Module, section: QuantRecord) -> QuantConfig:
    """Re-attach the quantizers recorded by `describe`, with their frozen activation ranges."""
    try:
        cfg = QuantConfig(w_bits=section.w_bits, a_bits=section.a_bits, act_range=section.act_range,
                          ema_momentum=section.ema_momentum)
    except UsageError as exc:
        raise PackageError(f"config.json's 'quantization' section is invalid: {exc}") from None
    layers = dict(quantized_layers(model))
    recorded = section.layers
    missing = sorted(set(layers) - set(recorded))
    extra = sorted(set(recorded) - set(layers))
    if missing or extra:
        raise PackageError(
            f"'quantization' section does not fit the model: missing {missing[:3]}, unknown {extra[:3]}",
            "the package config was edited by hand or comes from another model")
    for name, layer in layers.items():
        entry = recorded[name] or {}
        axis = int(entry.get("weight_axis", weight_axis(layer)))
        layer.analog.weight_quant = WeightQuantizer(cfg.w_bits, axis)
        layer.analog.input_quant = (
            ActQuantizer(layer, cfg.a_bits, cfg.act_range, cfg.ema_momentum, entry.get("act_max"))
            if _takes_input_quant(layer) else None
        )
    return cfg
