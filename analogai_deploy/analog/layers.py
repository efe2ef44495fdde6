"""Analog-aware layers: the digital layer plus the weight-noise model of an analog tile.

Each analog layer is a subclass of the layer it replaces, with the same parameters under the same
names, so state_dicts stay digital-compatible (the package stores clean digital weights) and code
that checks `isinstance(m, nn.Linear)` keeps working.

Weight noise (DESIGN.md): the forward pass uses W + eps, eps ~ N(0, s^2), s = c * sigma * max|W|,
drawn fresh every call; the gradient passes straight through to W. Cost (it runs 4x per MSNAT step):
max|W| is one vectorised min/max reduction; on the CPU, W + s * z is one pass of native/normal.c
(~1 ns a number against ~4 ns for torch's normal_ alone); elsewhere (CUDA, or no C compiler) the
standard normals are generated in place into a buffer each layer keeps and added by one fused
`addcmul`. The result is the only new tensor (autograd keeps it for the backward pass).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AnalogState:
    """The noise and quantization settings one analog layer runs with (not saved in state_dict).

    sigma: relative weight-noise level (0 = off); c: slicing factor; act_noise: relative output noise.
    weight_quant / input_quant: optional fake-quantizer modules (set by QAT), applied before noise.
    hw: a hardware.HardwareNoise (recipe sections noise / io) in place of the seed's noise model, or None.
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

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__ if k != "_buffers"}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)
        self._buffers = {}

    def standard_normal(self, like: torch.Tensor, key: str = "w") -> torch.Tensor:
        """Fresh N(0, 1) draws shaped like `like`, generated in place into this layer's buffer `key`.

        Safe to reuse: the buffer is only read by `addcmul` below, never kept by autograd.
        """
        buf = self._buffers.get(key)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[key] = torch.empty_like(like, memory_format=torch.contiguous_format)
        return buf.normal_()


def max_abs(t: torch.Tensor) -> torch.Tensor:
    """max|t| as a 0-dim tensor: aminmax is one vectorised pass with no |t| temporary (~4x abs().amax())."""
    lo, hi = torch.aminmax(t)
    return torch.maximum(hi, lo.neg())


def _native(t: torch.Tensor):
    """normal.c where it applies (CPU float32, contiguous; the library built), else None."""
    if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
        return None
    from .native import library

    return library()


def _draw(t: torch.Tensor, scale: torch.Tensor, state: AnalogState | None, key: str) -> torch.Tensor:
    """t + scale * z, z ~ N(0, 1) fresh; `scale` is 0-dim or one value per row (dim 0) of t."""
    lib = _native(t)
    if lib is None:
        z = state.standard_normal(t, key) if state is not None else torch.randn_like(t)
        return torch.addcmul(t, z, scale.view(-1, *[1] * (t.dim() - 1)) if scale.dim() else scale)
    out = torch.empty_like(t)
    rows = scale.reshape(-1).tolist()
    seeds = torch.randint(0, 2**62, (len(rows),)).tolist()  # from torch's generator: manual_seed reproduces
    src, dst = (t, out) if len(rows) == 1 else (t.reshape(len(rows), -1), out.view(len(rows), -1))
    for i, (s, seed) in enumerate(zip(rows, seeds)):
        x, o = (src, dst) if len(rows) == 1 else (src[i], dst[i])
        lib.add_normal(x.data_ptr(), o.data_ptr(), x.numel(), s, seed)
    return out


def _draw_rel(t: torch.Tensor, rel: float, state: AnalogState | None, key: str) -> torch.Tensor:
    """t + (rel * max|t|) * z: on the CPU one native call (the max, then the draws; the same float32 scale
    and the same seed draw as `_draw`, so the same numbers), else max_abs and `_draw`."""
    lib = _native(t)
    if lib is None:
        return _draw(t, max_abs(t).mul_(rel), state, key)
    out = torch.empty_like(t)
    seed = torch.randint(0, 2**62, (1,)).tolist()[0]  # from torch's generator, as _draw
    lib.add_normal_rel(t.data_ptr(), out.data_ptr(), t.numel(), rel, seed)
    return out


def add_relative_noise(t: torch.Tensor, rel: float, state: AnalogState | None = None, key: str = "w") -> torch.Tensor:
    """add_noise with scale = rel * max|t| (t detached for the max): the plain weight and output noise,
    in one native call per layer where it applies (small layers are dominated by per-call overhead)."""
    if t.requires_grad and torch.is_grad_enabled():
        return _StraightThrough.apply(t, _draw_rel, float(rel), state, key)
    return _draw_rel(t.detach(), float(rel), state, key)


class _StraightThrough(torch.autograd.Function):
    """draw(t, scale, ...) = t + s * z with dL/dt = dL/d(t + s z): one fused pass forward, the identity
    backward; saves nothing. `draw` is _draw (s given) or _draw_rel (s = scale * max|t|)."""

    @staticmethod
    def forward(ctx, t, draw, scale, state, key):
        return draw(t, scale, state, key)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None, None


def add_noise(t: torch.Tensor, scale: torch.Tensor, state: AnalogState | None = None, key: str = "w") -> torch.Tensor:
    """t + scale * z, z ~ N(0, 1) fresh on every call, the gradient straight through to t (scale is a
    constant: 0-dim, or one value per row of t). `state` lends its buffers to torch's generator."""
    scale = scale.detach()
    if t.requires_grad and torch.is_grad_enabled():
        return _StraightThrough.apply(t, _draw, scale, state, key)
    return _draw(t.detach(), scale, state, key)


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
        from . import hardware

        return hardware.noisy(weight, state.sigma, state.c, state.hw, channel_dim, outliers)
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
    its weights are input-scaled, hardware.py), plus the digital outlier part beside the tile (`digital`).
    `layer` lends the periphery its learned input range, if it has one."""
    if s.hw is not None:
        x = s.hw.scale_input(x, 1 if conv else x.dim() - 1)
    if s.hw is None or not s.hw.has_io:
        y = mvm(x, w, bias)
    else:
        from .hardware import periphery

        y = periphery(x, w, lambda a, b: mvm(a, b, None), s.hw, conv, layer)
        if bias is not None:
            y = y + (bias.view(1, -1, *[1] * (y.dim() - 2)) if conv else bias)
    return y if digital is None else y + mvm(x, digital, None)


class AnalogLinear(AnalogLayer, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.analog
        if s.hw is not None:  # the hardware-matched tile in native passes where it applies (hardware.py)
            from .hardware import fused_linear

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
