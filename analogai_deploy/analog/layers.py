"""Analog-aware layers: the digital layer plus the weight-noise model of an analog tile.

Each analog layer is a subclass of the layer it replaces, with the same parameters under the same
names, so state_dicts stay digital-compatible (the package stores clean digital weights) and code
that checks `isinstance(m, nn.Linear)` keeps working.

Weight noise (DESIGN.md): the forward pass uses W + eps, eps ~ N(0, s^2), s = c * sigma * max|W|,
drawn fresh every call; the gradient passes straight through to W (hardware/draws.py: the draws and their
cost). A layer with a `HardwareNoise` trains on the tile's noise and periphery instead (hardware/noise.py,
hardware/fused.py).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..hardware import noise as hw_noise
from ..hardware.draws import add_relative_noise
from ..hardware.fused import fused_linear


class AnalogState:
    """The noise and quantization settings one analog layer runs with (not saved in state_dict).

    sigma: relative weight-noise level (0 = off); c: slicing factor; act_noise: relative output noise.
    weight_quant / input_quant: optional fake-quantizer modules (set by QAT), applied before noise.
    hw: a hardware/noise.py HardwareNoise (recipe sections noise / io) in place of the seed's noise model, or None.
    The noise buffers are scratch space, never copied: a deep copy (an MSNAT client) gets its own.
    """

    __slots__ = ("sigma", "c", "act_noise", "weight_quant", "input_quant", "hw", "_buffers")

    def __init__(self, sigma: float = 0.0, c: float = 1.0, act_noise: float = 0.0):
        self.sigma = sigma
        self.c = c
        self.act_noise = act_noise
        self.weight_quant = None
        self.input_quant = None
        self.hw = None
        self._buffers: dict = {}

    def __deepcopy__(self, memo):
        """Every setting copied, the noise buffers not: a copy (an MSNAT client) draws into its own."""
        new = AnalogState.__new__(AnalogState)
        memo[id(self)] = new
        for k in self.__slots__:
            setattr(new, k, {} if k == "_buffers" else copy.deepcopy(getattr(self, k), memo))
        return new

    def standard_normal(self, like: torch.Tensor, key: str = "w") -> torch.Tensor:
        """Fresh N(0, 1) draws shaped like `like`, generated in place into this layer's buffer `key`.

        Safe to reuse: the buffer is only read by hardware/draws.py's `addcmul`, never kept by autograd.
        """
        buf = self._buffers.get(key)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[key] = torch.empty_like(like, memory_format=torch.contiguous_format)
        return buf.normal_()


def noisy(weight: torch.Tensor, state: AnalogState, channel_dim: int = 0) -> torch.Tensor:
    """The weight the tile computes with: quantized if QAT is on, plus programming noise when sigma > 0
    (`channel_dim`: where the output channels of `weight` are, for per-channel hardware noise)."""
    return noisy_parts(weight, state, channel_dim)[0]


def noisy_parts(weight: torch.Tensor, state: AnalogState, channel_dim: int = 0, outliers: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`noisy`, and for a Linear or GPT-2 Conv1D layer (`outliers`) whose hardware noise keeps outliers
    digital, the digital outlier part (shaped as `weight`) the caller adds beside the tile (else None)."""
    if state.weight_quant is not None:
        weight = state.weight_quant(weight)
    if state.hw is not None:
        return hw_noise.noisy(weight, state.sigma, state.c, state.hw, channel_dim, outliers)
    if state.sigma <= 0:
        return weight, None
    return add_relative_noise(weight, state.c * state.sigma, state), None  # one fresh draw per layer per call


def analog_input(x: torch.Tensor, state: AnalogState) -> torch.Tensor:
    return state.input_quant(x) if state.input_quant is not None else x


def analog_output(y: torch.Tensor, state: AnalogState) -> torch.Tensor:
    if state.act_noise <= 0:
        return y
    return add_relative_noise(y, state.act_noise, state, "y")


class AnalogLayer:
    """Mixin: marks a layer as analog and holds its `AnalogState`."""

    analog: AnalogState
    #: names of the parameters that live on analog tiles (dotted for submodules)
    analog_weights: tuple[str, ...] = ("weight",)

    @classmethod
    def from_digital(cls, module: nn.Module, state: AnalogState) -> nn.Module:
        """Re-class `module` in place: same parameters, buffers and hooks, analog forward."""
        module.__class__ = cls
        module.analog = state
        return module


def _tile(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, mvm, s: AnalogState, conv: bool,
          digital: torch.Tensor | None = None, layer: nn.Module | None = None):
    """mvm(x, w) + bias, through the tile periphery when the layer trains with hardware IO (and x / s where
    its weights are input-scaled, hardware/noise.py), plus the digital outlier part beside the tile (`digital`).
    `layer` lends the periphery its learned input range, if it has one."""
    if s.hw is not None:
        x = s.hw.scale_input(x, 1 if conv else x.dim() - 1)
    if s.hw is None or not s.hw.has_io:
        y = mvm(x, w, bias)
    else:
        y = hw_noise.periphery(x, w, lambda a, b: mvm(a, b, None), s.hw, conv, layer)
        if bias is not None:
            y = y + (bias.view(1, -1, *[1] * (y.dim() - 2)) if conv else bias)
    return y if digital is None else y + mvm(x, digital, None)


class AnalogLinear(AnalogLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.analog
        if s.hw is not None:  # the hardware-matched tile in native passes where it applies (hardware/fused.py)
            y = fused_linear(analog_input(x, s), self)
            if y is not None:
                return analog_output(y, s)
        w, digital = noisy_parts(self.weight, s, outliers=True)
        return analog_output(_tile(analog_input(x, s), w, self.bias, F.linear, s, False, digital, self), s)


class _AnalogConvMixin(AnalogLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.analog
        return analog_output(_tile(analog_input(x, s), noisy(self.weight, s), self.bias, self._conv_forward, s,
                                   True, layer=self), s)


class AnalogConv1d(_AnalogConvMixin, nn.Conv1d):
    pass


class AnalogConv2d(_AnalogConvMixin, nn.Conv2d):
    pass


class AnalogConv3d(_AnalogConvMixin, nn.Conv3d):
    pass


class AnalogMultiheadAttention(AnalogLayer, nn.MultiheadAttention):
    """nn.MultiheadAttention with its input and output projections on analog tiles.

    The projections are plain parameters read by a functional kernel, so the noisy weights are
    swapped in with `torch.func.functional_call` around the original forward.
    """

    @property
    def analog_weights(self) -> tuple[str, ...]:  # type: ignore[override]
        if self._qkv_same_embed_dim:
            return ("in_proj_weight", "out_proj.weight")
        return ("q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight")

    def forward(self, *args, **kwargs):
        s = self.analog
        if getattr(self, "_in_analog_call", False) or (s.sigma <= 0 and s.weight_quant is None):
            out = super().forward(*args, **kwargs)
        else:
            params = {name: noisy(self.get_parameter(name), s) for name in self.analog_weights}
            self._in_analog_call = True
            try:
                out = torch.func.functional_call(self, params, args, kwargs)
            finally:
                self._in_analog_call = False
        if s.act_noise > 0:
            out = (analog_output(out[0], s), *out[1:])
        return out


def hf_conv1d_class():
    """Hugging Face's GPT-2 style Conv1D (a Linear with transposed weight), if transformers is present."""
    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # transformers absent or broken: the type simply is not registered
        return None

    class AnalogHFConv1D(AnalogLayer, Conv1D):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.analog
            size_out = x.size()[:-1] + (self.nf,)
            x = analog_input(x, s)
            # [in, out]: output channels are the columns; `digital` the outlier part beside the tile, or None
            w, digital = noisy_parts(self.weight, s, channel_dim=1, outliers=True)
            if s.hw is not None and s.hw.has_io:
                y = _tile(x.view(-1, x.size(-1)), w.t(), self.bias, F.linear, s, False,
                          None if digital is None else digital.t(), layer=self)
            else:
                y = torch.addmm(self.bias, x.view(-1, x.size(-1)), w)
                if digital is not None:
                    y = y + x.view(-1, x.size(-1)) @ digital
            return analog_output(y.view(size_out), s)

    return Conv1D, AnalogHFConv1D
