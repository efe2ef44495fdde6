"""Analog-aware layers: the digital layer plus the weight-noise model of an analog tile.

Each analog layer is a subclass of the layer it replaces, with the same parameters under the same
names, so state_dicts stay digital-compatible (the package stores clean digital weights) and code
that checks `isinstance(m, nn.Linear)` keeps working.

Weight noise (DESIGN.md): the forward pass uses W + eps, eps ~ N(0, s^2), s = c * sigma * max|W|,
drawn fresh every call in one operation; the gradient passes straight through to W.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AnalogState:
    """The noise and quantization settings one analog layer runs with (not saved in state_dict).

    sigma: relative weight-noise level (0 = off); c: slicing factor; act_noise: relative output noise.
    weight_quant / input_quant: optional fake-quantizer modules (set by QAT), applied before noise.
    """

    __slots__ = ("sigma", "c", "act_noise", "weight_quant", "input_quant")

    def __init__(self, sigma: float = 0.0, c: float = 1.0, act_noise: float = 0.0):
        self.sigma = sigma
        self.c = c
        self.act_noise = act_noise
        self.weight_quant = None
        self.input_quant = None


def noisy(weight: torch.Tensor, state: AnalogState) -> torch.Tensor:
    """The weight the tile computes with: quantized if QAT is on, plus programming noise when sigma > 0."""
    if state.weight_quant is not None:
        weight = state.weight_quant(weight)
    if state.sigma <= 0:
        return weight
    scale = state.c * state.sigma * weight.detach().abs().amax()
    # One draw per layer per call; detached so the gradient w.r.t. W is the identity (straight through).
    return weight + (torch.randn_like(weight) * scale).detach()


def analog_input(x: torch.Tensor, state: AnalogState) -> torch.Tensor:
    return state.input_quant(x) if state.input_quant is not None else x


def analog_output(y: torch.Tensor, state: AnalogState) -> torch.Tensor:
    if state.act_noise <= 0:
        return y
    scale = state.act_noise * y.detach().abs().amax()
    return y + (torch.randn_like(y) * scale).detach()


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


class AnalogLinear(AnalogLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.analog
        return analog_output(F.linear(analog_input(x, s), noisy(self.weight, s), self.bias), s)


class _AnalogConvMixin(AnalogLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.analog
        return analog_output(self._conv_forward(analog_input(x, s), noisy(self.weight, s), self.bias), s)


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


def _hf_conv1d_class():
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
            y = torch.addmm(self.bias, x.view(-1, x.size(-1)), noisy(self.weight, s))
            return analog_output(y.view(size_out), s)

    return Conv1D, AnalogHFConv1D
