"""Training noise that matches the certify hardware: the tensor maths (recipe sections `noise` and `io`; the
recipe wiring that puts it on a model is recovery/hardware_noise.py).

The seed's model (analog/layers.py) draws W + N(0, s^2), s = c * sigma * max|W| over the whole tensor. A
`HardwareNoise` on a layer's AnalogState replaces it by what the tiles do:

  scale  the mapping's weight_scaling words: tile: one max|W| per layer (one weight scale per tile);
         column: max|W| per output channel (one scale per crossbar column).
  model  gaussian: s = c * sigma * wmax; pcm: aihwkit PCMLikeNoiseModel's programming noise, a
         polynomial in the normalised conductance u = |w| / wmax on the programmed device of the pair
         plus the one at u = 0 on the other, s = c * sigma * wmax * q(u), q(u) = sqrt(p(u)^2 + p(0)^2) /
         sqrt(p(1)^2 + p(0)^2), so the largest weight gets the Gaussian's noise. aihwkit's own PCM
         statistics (g_max 25 uS) are c * sigma = 0.0435 (sigma = 0.056 at c = 0.7776).
         device: the whole PCM device certify simulates, at a time after programming drawn per layer and
         pass from `times`: aihwkit's PCMLikeNoiseModel (g_max 25 uS) programmes the normalised weights
         u = w / wmax, drifts them with per-device nu and accumulated read noise, and a global drift
         compensation rescales them, as certify's PCM device (native pass, hardware/pcm.py; aihwkit's
         own functions off the CPU). The deviation from u is scaled by c * sigma / 0.0435, so at
         sigma = 0.056 (c = 0.7776) the layer trains on the device itself and MSNAT's levels multiply it.
         Unlike the polynomial it has the drift: small conductances drift faster (nu 0.1 against 0.049
         near g_max), so after compensation they shrink, and per-device nu spreads grow with log t.
  clip   the weights used in the forward pass are clipped (fixed: |w| <= value; layer_std / channel_std:
         value std per layer / output channel), gradients straight through; certify clips the same way
         (hardware/clipping.py: the one clipping rule of training and certify).
  outliers  (noise.outliers: digital) a Linear (or GPT-2 Conv1D) layer's tile weights (after the input
         scaling) beyond outlier_std std of their output column stay off the tile: the tile holds them
         clipped, with its noise and periphery, and the clipped-off part runs digitally beside it, exact
         (the mapping's outliers=digital; analog/outliers.py).
  clip after the step  (noise.clip_when: step) the weights themselves are clipped in place after every
         optimizer step (recovery/hardware_noise.py's `clip_step`), not in the forward pass.
  io     the tile periphery around the matmul, as certify's aihwkit PyTorch tile: inputs divided by
         their abs-max per sample (ABS_MAX noise management; per input vector for linear layers, per
         sample for convolutions, an upper bound of aihwkit's per-patch max), or by the layer's learned
         static range r (io.input_range: learned; `input_range_clip`), quantised to dac_bits;
         outputs (in units of input max x wmax) get N(0, out_noise^2) and are quantised to adc_bits
         over +-out_bound; then scaled back. Roundings pass gradients straight through.

  input scaling  (noise.input_scaling: package) the layer runs as certify maps it with the package's
         per-channel input scaling (analog/mapping.py): the tile holds W_:j * s_j and sees x_j / s_j,
         so the noise (its per-column wmax, the PCM shape) and the periphery act on those, exactly as in
         certify; the product is the digital layer's when the noise is off.

MSNAT's sigmas (FI levels, FL deltas) scale the weight noise of whichever model is chosen. A Linear layer with
IO under the gaussian or pcm model runs as one native pass instead (hardware/fused.py).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

from . import pcm
from .clipping import Clip, channel_view, clamp, clip_bound, rows
from .draws import add_noise


#: one weight scale per tile or per output channel, a crossbar column: the mapping's weight_scaling words
Scale = Literal["tile", "column"]
#: the programming noise's model (module docstring)
Model = Literal["gaussian", "pcm", "device"]


@dataclass(frozen=True, eq=False, repr=False)
class HardwareNoise:
    """The settings one layer trains with (validated by the recipe; recovery/hardware_noise.py builds them)."""

    scale: Scale = "tile"
    model: Model = "gaussian"
    clip: Clip = "none"
    clip_value: float = 3.0
    out_noise: float = 0.0
    dac_bits: int = 0
    adc_bits: int = 0
    out_bound: float = 12.0
    in_scale: torch.Tensor | None = None  # s per input channel (module docstring), or None
    times: tuple[float, ...] = (86400.0,)  # seconds after programming the device model draws from
    outlier_std: float = 0.0  # > 0: Linear layers keep their outlier weights digital (module docstring)
    c: float | None = None  # the slicing factor in place of the package's, or None
    step_clip: bool = False  # clip / clip_value act after every optimizer step (clip_step), not in forward
    input_range: Any = None  # a recipe InputRangeConfig in learned mode, or None (dynamic)

    def __post_init__(self):
        object.__setattr__(self, "times", tuple(self.times) or (86400.0,))

    @property
    def has_io(self) -> bool:
        return self.out_noise > 0 or self.dac_bits > 0 or self.adc_bits > 0 or self.input_range is not None

    def __repr__(self) -> str:
        shown = (f.name for f in fields(self) if f.name != "in_scale")  # a tensor per layer: not a setting to print
        return "HardwareNoise(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in shown) + ")"

    def scale_input(self, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """x / s over the input channels at `channel_dim` of x (identity without input scaling)."""
        if self.in_scale is None:
            return x
        shape = [1] * x.dim()
        shape[channel_dim] = -1
        return x / self.in_scale.to(x.dtype).view(shape)


def straight(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y in the forward pass, the gradient of x in the backward pass."""
    return x + (y - x).detach()


def clip(w: torch.Tensor, hw: HardwareNoise, channel_dim: int = 0) -> torch.Tensor:
    """The forward pass's clipped weight, gradients straight through (w itself without a forward clip)."""
    if hw.clip == "none" or hw.step_clip:
        return w
    return straight(w, clamp(w, clip_bound(w, hw.clip, hw.clip_value, channel_dim)))


def wmax(w: torch.Tensor, hw: HardwareNoise, channel_dim: int = 0) -> torch.Tensor:
    """max|W| per tensor (0-dim) or per output channel (broadcast shape), never 0."""
    d = w.detach()
    if hw.scale == "column":
        m = channel_view(rows(d, channel_dim).abs().amax(1), w, channel_dim)
    else:
        m = d.abs().amax()
    return m.clamp(min=1e-12)


def tile_weights(w: torch.Tensor, hw: HardwareNoise, channel_dim: int = 0, outliers: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(what the tile holds: clipped, input-scaled, outliers cut off; the digital outlier part or None).
    `outliers`: the caller is a Linear layer that adds the digital part (layers.AnalogLinear, AnalogHFConv1D)."""
    w = clip(w, hw, channel_dim)
    if hw.in_scale is not None:  # the tile holds W_:j * s_j (module docstring); channel_dim 0: inputs on dim 1
        shape = [1] * w.dim()
        shape[1 - channel_dim] = -1
        w = w * hw.in_scale.to(w.dtype).view(shape)
    if not (outliers and hw.outlier_std > 0):
        return w, None
    return outlier_split(w, hw.outlier_std, channel_dim)


def outlier_split(w: torch.Tensor, k: float, channel_dim: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(w clipped at k std of each output channel - an output column of the tile: a row of w, or a column
    where `channel_dim` is 1 (GPT-2's Conv1D, [in, out]) -, the clipped-off rest): the mapping's
    outliers=digital, for training and certify alike. The gradient reaches every weight through one part."""
    kept = clamp(w, k * w.detach().std(1 - channel_dim, keepdim=True))
    return kept, w - kept


def noisy(w: torch.Tensor, sigma: float, c: float, hw: HardwareNoise, channel_dim: int = 0,
          outliers: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the tile's weight, `tile_weights`, plus this model's programming noise at level sigma with a
    straight-through gradient; the digital outlier part, noise-free, or None)."""
    w, digital = tile_weights(w, hw, channel_dim, outliers)
    return _programmed(w, sigma, c if hw.c is None else hw.c, hw, channel_dim), digital


def _programmed(w: torch.Tensor, sigma: float, c: float, hw: HardwareNoise, channel_dim: int) -> torch.Tensor:
    if sigma <= 0:
        return w
    m = wmax(w, hw, channel_dim)
    if hw.model == "gaussian":
        scale = m * (c * sigma)
        if scale.dim() and channel_dim == 0:
            return add_noise(w, scale.reshape(-1))  # one value per row: the fused native path
        if not scale.dim():
            return add_noise(w, scale)
    elif hw.model == "device":
        t = hw.times[int(torch.randint(len(hw.times), ()))] if len(hw.times) > 1 else hw.times[0]
        return w + (pcm.device_deviation(w.detach() / m, t) * (m * (c * sigma / pcm.PCM_C_SIGMA))).detach()
    else:
        u = (w.detach().abs() / m).clamp(max=1.0)
        q = torch.sqrt(pcm.prog_sigma(u) ** 2 + pcm.prog_sigma(0.0) ** 2) / pcm.PROG_NORM
        scale = m * q * (c * sigma)
    return w + (torch.randn_like(w) * scale).detach()


def _quant(x: torch.Tensor, bits: int, bound: float) -> torch.Tensor:
    """aihwkit's converter grid: step = 2 * bound / (2^bits - 2), clipped to +-bound, straight through."""
    step = 2.0 * bound / (2**bits - 2)
    return straight(x, torch.round(x.clamp(-bound, bound) / step) * step)


def periphery(x: torch.Tensor, w: torch.Tensor, mvm, hw: HardwareNoise, conv: bool, layer=None) -> torch.Tensor:
    """mvm(x, w) (no bias) through the tile's DAC, output noise and ADC, in the tile's normalised units.
    `layer`: the module, whose learned input range (recovery/hardware_noise.py's `apply`) replaces the abs-max
    scaling."""
    m = wmax(w, hw)  # the layer's weights have output channels on dim 0 here
    r = None if layer is None or hw.input_range is None else layer._parameters.get(RANGE)
    if r is not None:
        x = input_range_clip(x, r, layer._buffers[RANGE_SEEN], hw.input_range, layer.training)
        xmax = r.detach().clamp(min=1e-12)  # the range's gradient comes from the clip alone, as aihwkit-lightning
    else:
        xd = x.detach().abs()
        xmax = (xd.flatten(1).amax(1).view(-1, *[1] * (x.dim() - 1)) if conv else xd.amax(-1, keepdim=True))
        xmax = xmax.clamp(min=1e-12)
    xn = x / xmax
    if hw.dac_bits:
        xn = _quant(xn, hw.dac_bits, 1.0)
    y = mvm(xn, w / m)
    if hw.out_noise > 0:
        y = y + (torch.randn_like(y) * hw.out_noise).detach()
    if hw.adc_bits:
        y = _quant(y, hw.adc_bits, hw.out_bound)
    scale = m.reshape(-1) if m.dim() else m
    if conv:
        return y * xmax * (scale.view(1, -1, *[1] * (y.dim() - 2)) if scale.dim() else scale)
    return y * xmax * scale


# -- learned static input ranges (io.input_range: learned): aihwkit-lightning's rule ------------------------

#: the parameter (and its init counter) a layer trains its input range in while hardware noise is on; in the
#: state dict, so MSNAT fusion averages it and checkpoints keep it; removed before the package is written
RANGE, RANGE_SEEN = "analog_input_range", "analog_input_range_seen"


class _RangeClip(torch.autograd.Function):
    """clamp(x, -r, r), aihwkit-lightning's StraightThroughClamp + InputRangeForward
    (nn/modules/torch_utils/torch_linear.py): x's gradient is zero where it clipped; r's is (the negative part of
    the gradient of the inputs clipped at +r, minus the positive part of those at -r) times r, plus decay x r
    while more than input_min_percentage of the inputs lie inside."""

    @staticmethod
    def forward(ctx, x, r, decay, inside_min):
        upper, lower = x >= r, x <= -r
        beyond = (upper | lower) & (x.abs() != r)
        ctx.save_for_backward(upper, lower, beyond)
        # r's value now, not r itself: the first batches set r in place on every forward pass (its data
        # initialisation), and the feedback loops run four passes before one backward
        ctx.r = r.detach().clone()
        ctx.decay, ctx.inside_min = decay, inside_min
        return torch.minimum(torch.maximum(x, -r), r)

    @staticmethod
    def backward(ctx, grad):
        upper, lower, beyond = ctx.saved_tensors
        r = ctx.r
        g_r = (grad[upper].clamp(max=0.0).sum() - grad[lower].clamp(min=0.0).sum()) * r
        if ctx.decay > 0:
            inside = 1.0 - (upper | lower).sum() / upper.numel()
            g_r = g_r + ctx.decay * r * (inside > ctx.inside_min)
        return grad.masked_fill(beyond, 0.0), g_r.reshape(r.shape).to(r.dtype), None, None


def input_range_clip(x: torch.Tensor, r: torch.Tensor, seen: torch.Tensor, cfg, training: bool) -> torch.Tensor:
    """x clipped to the layer's learned range r. In training, the first cfg.init_from_data batches set r to the
    running mean of init_std_alpha x std(x) (aihwkit-lightning's apply_input_range)."""
    if training and int(seen) < cfg.init_from_data:
        std = float(x.detach().float().std())
        if std > 0:
            n = int(seen)
            with torch.no_grad():
                r.copy_((r.float() * n + cfg.init_std_alpha * std) / (n + 1))
            seen += 1
        with torch.no_grad():
            r.abs_()
    return _RangeClip.apply(x, r.to(x.dtype), cfg.decay, cfg.input_min_percentage)
