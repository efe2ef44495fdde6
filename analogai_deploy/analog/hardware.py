"""Training noise that matches the certify hardware (recipe sections `noise` and `io`).

The seed's model (layers.noisy) draws W + N(0, s^2), s = c * sigma * max|W| over the whole tensor. A
`HardwareNoise` on a layer's AnalogState replaces it by what the tiles do:

  scale  tensor: one max|W| per layer (one weight scale per tile); channel: max|W| per output channel
         (one scale per crossbar column, the mapping's weight_scaling=column).
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
         value std per layer / output channel), gradients straight through; certify clips the same way.
  outliers  (noise.outliers: digital) a Linear (or GPT-2 Conv1D) layer's tile weights (after the input
         scaling) beyond outlier_std std of their output column stay off the tile: the tile holds them
         clipped, with its noise and periphery, and the clipped-off part runs digitally beside it, exact
         (the mapping's outliers=digital; analog/outliers.py).
  clip after the step  (noise.clip_when: step) the weights themselves are clipped in place after every
         optimizer step (`clip_step`, aihwkit-lightning's clip_weights), not in the forward pass.
  io     the tile periphery around the matmul, as certify's aihwkit PyTorch tile: inputs divided by
         their abs-max per sample (ABS_MAX noise management; per input vector for linear layers, per
         sample for convolutions, an upper bound of aihwkit's per-patch max), or by the layer's learned
         static range r (io.input_range: learned; `input_range_clip`), quantised to dac_bits;
         outputs (in units of input max x wmax) get N(0, out_noise^2) and are quantised to adc_bits
         over +-out_bound; then scaled back. Roundings pass gradients straight through.

  input scaling  (noise.input_scaling: package) the layer runs as certify maps it with the package's
         per-channel input scaling (analog/mapping.py): the tile holds W_:j * s_j and sees x_j / s_j,
         so the noise (its per-column wmax, the PCM shape) and the periphery act on those, exactly as in
         certify; the product is the digital layer's when the noise is off. s is calibrated once, before
         training, on the package's clean weights and certify's calibration inputs (`input_scales`).

MSNAT's sigmas (FI levels, FL deltas) scale the weight noise of whichever model is chosen.

Cost: a Linear layer with IO under the gaussian or pcm model (the text recipes) runs as one `_FusedLinear`:
native passes (analog/native/normal.c: tile_weights, tile_dac, tile_adc) for the tile's weights with their
noise, the DAC and the output noise + ADC, around one matmul, and a hand-written backward, in place of a dozen
torch operations per layer and pass, each a temporary the size of the weights or the activations (MiniLM:
1.43x -> 1.13x a digital step in one run; BENCHMARKS.md section 2). Its values are the torch path's (bit for bit with the
noise off); its draws come from normal.c's generator, seeded from torch's.
"""
from __future__ import annotations

import functools
import math
import os

import torch

#: aihwkit 1.1 PCMLikeNoiseModel.prog_coeff (uS at g_max = 25 uS): sigma_prog(u) = c0 + c1 u + c2 u^2
PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)
#: c * sigma of the seed's Gaussian that matches aihwkit's PCM programming noise at its defaults: the unit in
#: which the `device` model's deviation is scaled
PCM_C_SIGMA = 0.0435


def _p(u):
    c0, c1, c2 = PCM_PROG_COEFF
    return c0 + c1 * u + c2 * u * u


_PCM_NORM = math.sqrt(_p(1.0) ** 2 + _p(0.0) ** 2)


class HardwareNoise:
    """The settings one layer trains with (plain attributes; validated by the recipe)."""

    __slots__ = ("scale", "model", "clip", "clip_value", "out_noise", "dac_bits", "adc_bits", "out_bound",
                 "in_scale", "times", "outlier_std", "c", "step_clip", "input_range")

    def __init__(self, scale: str = "tensor", model: str = "gaussian", clip: str = "none", clip_value: float = 3.0,
                 out_noise: float = 0.0, dac_bits: int = 0, adc_bits: int = 0, out_bound: float = 12.0,
                 in_scale: torch.Tensor | None = None, times: tuple[float, ...] = (86400.0,),
                 outlier_std: float = 0.0, c: float | None = None, step_clip: bool = False, input_range=None):
        self.scale, self.model, self.clip, self.clip_value = scale, model, clip, clip_value
        self.out_noise, self.dac_bits, self.adc_bits, self.out_bound = out_noise, dac_bits, adc_bits, out_bound
        self.in_scale = in_scale  # s per input channel (module docstring), or None
        self.times = tuple(times) or (86400.0,)  # seconds after programming the device model draws from
        self.outlier_std = outlier_std  # > 0: Linear layers keep their outlier weights digital (module docstring)
        self.c = c  # the slicing factor in place of the package's, or None
        self.step_clip = step_clip  # clip / clip_value act after every optimizer step (clip_step), not in forward
        self.input_range = input_range  # a recipe InputRangeConfig in learned mode, or None (dynamic)

    @property
    def has_io(self) -> bool:
        return self.out_noise > 0 or self.dac_bits > 0 or self.adc_bits > 0 or self.input_range is not None

    def __repr__(self) -> str:
        shown = (k for k in self.__slots__ if k != "in_scale")  # a tensor per layer: not a setting to print
        return "HardwareNoise(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in shown) + ")"

    def scale_input(self, x: torch.Tensor, channel_dim: int) -> torch.Tensor:
        """x / s over the input channels at `channel_dim` of x (identity without input scaling)."""
        if self.in_scale is None:
            return x
        shape = [1] * x.dim()
        shape[channel_dim] = -1
        return x / self.in_scale.to(x.dtype).view(shape)


def _straight(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y in the forward pass, the gradient of x in the backward pass."""
    return x + (y - x).detach()


def _rows(w: torch.Tensor, channel_dim: int) -> torch.Tensor:
    return (w.transpose(0, channel_dim) if channel_dim else w).reshape(w.shape[channel_dim], -1)


def _view(v: torch.Tensor, w: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """A per-output-channel vector shaped to broadcast against the weight."""
    shape = [1] * w.dim()
    shape[channel_dim] = -1
    return v.view(shape)


def clip(w: torch.Tensor, hw: HardwareNoise, channel_dim: int = 0) -> torch.Tensor:
    if hw.clip == "none" or hw.step_clip:
        return w
    d = w.detach()
    if hw.clip == "fixed":
        bound = torch.tensor(hw.clip_value, dtype=w.dtype, device=w.device)
    elif hw.clip == "layer_std":
        bound = hw.clip_value * d.std()
    else:
        bound = _view(hw.clip_value * _rows(d, channel_dim).std(1), w, channel_dim)
    return _straight(w, torch.maximum(torch.minimum(w, bound), -bound))


def wmax(w: torch.Tensor, hw: HardwareNoise, channel_dim: int = 0) -> torch.Tensor:
    """max|W| per tensor (0-dim) or per output channel (broadcast shape), never 0."""
    d = w.detach()
    if hw.scale == "channel":
        m = _view(_rows(d, channel_dim).abs().amax(1), w, channel_dim)
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
    bound = k * w.detach().std(1 - channel_dim, keepdim=True)
    kept = torch.maximum(torch.minimum(w, bound), -bound)
    return kept, w - kept


def noisy(w: torch.Tensor, sigma: float, c: float, hw: HardwareNoise, channel_dim: int = 0,
          outliers: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the tile's weight, `tile_weights`, plus this model's programming noise at level sigma with a
    straight-through gradient; the digital outlier part, noise-free, or None)."""
    w, digital = tile_weights(w, hw, channel_dim, outliers)
    return _programmed(w, sigma, c if hw.c is None else hw.c, hw, channel_dim), digital


def _programmed(w: torch.Tensor, sigma: float, c: float, hw: HardwareNoise, channel_dim: int) -> torch.Tensor:
    from .layers import add_noise

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
        return w + (device_deviation(w.detach() / m, t) * (m * (c * sigma / PCM_C_SIGMA))).detach()
    else:
        u = (w.detach().abs() / m).clamp(max=1.0)
        q = torch.sqrt(_p(u) ** 2 + _p(0.0) ** 2) / _PCM_NORM
        scale = m * q * (c * sigma)
    return w + (torch.randn_like(w) * scale).detach()


# -- the fused training tile: native passes in place of a dozen torch operations per layer and pass ----------

#: the PCM polynomial's coefficients as normal.c's tile_weights reads them
_PCM_COEFF = torch.tensor(PCM_PROG_COEFF, dtype=torch.float32)


def _native(*tensors: torch.Tensor):
    """normal.c where every tensor is on the CPU in float32 (the library built; ANALOGAI_FUSED_TILE=0: the
    torch operations instead, for comparison), else None."""
    if os.environ.get("ANALOGAI_FUSED_TILE", "1") == "0" or any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    from .native import library

    return library()


def _seed() -> int:
    """A seed for one native draw, from torch's default generator: torch.manual_seed reproduces the run."""
    return int(torch.randint(0, 2**62, ()))


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _tile(lib, w: torch.Tensor, s: torch.Tensor | None, hw: HardwareNoise, csig: float
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(w * s plus this model's programming noise at c * sigma = csig, the periphery's weight scale per row):
    normal.c's tile_weights, w with its output channels on dim 0."""
    w = w.detach().contiguous()
    rows = w.shape[0]
    tile, wm = torch.empty_like(w), torch.empty(rows)
    lib.tile_weights(w.data_ptr(), _ptr(s), rows, w.numel() // rows, hw.scale == "channel", hw.model == "pcm",
                     csig, _PCM_COEFF.data_ptr(), _PCM_NORM, _seed() if csig > 0 else 0, tile.data_ptr(),
                     wm.data_ptr())
    return tile, wm


class _FusedLinear(torch.autograd.Function):
    """F.linear(x, W) + bias through the tile as `noisy` and `periphery` compute it (input scaling, programming
    noise, DAC, output noise, ADC), in three native passes around one matmul; the gradients are theirs: straight
    through every rounding and draw, with the abs-max scales constants. Saves the DAC's output and the tile."""

    @staticmethod
    def forward(ctx, x, w, bias, hw, csig, lib):
        k = x.shape[-1]
        x2 = x.detach().reshape(-1, k).contiguous()
        n = x2.shape[0]
        s = None if hw.in_scale is None else hw.in_scale.to(torch.float32).contiguous()
        tile, wm = _tile(lib, w, s, hw, csig)
        xq, xmax = torch.empty_like(x2), torch.empty(n)
        lib.tile_dac(x2.data_ptr(), _ptr(s), n, k, hw.dac_bits, xq.data_ptr(), xmax.data_ptr())
        y = torch.mm(xq, tile.t())
        b = None if bias is None else bias.detach().contiguous()
        lib.tile_adc(y.data_ptr(), n, tile.shape[0], xmax.data_ptr(), wm.data_ptr(), _ptr(b), hw.out_noise,
                     hw.adc_bits, hw.out_bound, _seed() if hw.out_noise > 0 else 0)
        ctx.save_for_backward(xq, tile, xmax, s)
        ctx.x_shape = x.shape
        return y.view(*x.shape[:-1], tile.shape[0])

    @staticmethod
    def backward(ctx, grad):
        xq, tile, xmax, s = ctx.saved_tensors
        g = grad.reshape(-1, tile.shape[0])
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:  # d/dx of (x / s) through the tile: g @ tile, then / s
            gx = torch.mm(g, tile)
            gx = (gx.div_(s) if s is not None else gx).view(ctx.x_shape)
        if ctx.needs_input_grad[1]:  # d/dW: the inputs the tile saw (xq * xmax) against g, times s; the row
            # scale goes on the narrower side (an LM head's g is tokens x vocabulary, its xq tokens x hidden)
            wide = g.shape[1] > xq.shape[1]
            gw = torch.mm(g.t() if wide else (g * xmax.unsqueeze(1)).t(), xq * xmax.unsqueeze(1) if wide else xq)
            if s is not None:
                gw.mul_(s)
        if ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb, None, None, None


def fused_linear(x: torch.Tensor, layer) -> torch.Tensor | None:
    """An AnalogLinear's forward under hardware noise with IO in one `_FusedLinear` call, where it applies:
    the gaussian or pcm model, no forward clip, no digital outliers, no learned input range, no QAT weights, CPU
    float32, the native library built (ANALOGAI_FUSED_TILE=0 turns it off); else None (the caller's torch path)."""
    s, w = layer.analog, layer.weight
    hw = s.hw
    if (hw.model not in ("gaussian", "pcm") or (hw.clip != "none" and not hw.step_clip) or hw.outlier_std > 0
            or hw.input_range is not None or not hw.has_io or s.weight_quant is not None):
        return None
    lib = _native(x, w, *([] if layer.bias is None else [layer.bias]))
    if lib is None:
        return None
    csig = float(s.sigma * (s.c if hw.c is None else hw.c)) if s.sigma > 0 else 0.0
    return _FusedLinear.apply(x, w, layer.bias, hw, csig, lib)


@functools.lru_cache(maxsize=1)
def pcm_device():
    """certify's PCM device model (hardware/devices.py), built once."""
    from ..hardware.devices import DeviceConfig, noise_model

    return noise_model(DeviceConfig(name="PCM"))


def device_deviation(u: torch.Tensor, seconds: float, nm=None) -> torch.Tensor:
    """What the PCM device makes of normalised weights u (max|u| <= 1, one tile) `seconds` after programming,
    minus u: programming noise, drift and read noise, then the global drift compensation's gain (the mean
    |w| at programming over the mean |w| now, the one-hot readout certify's GlobalDriftCompensation takes)."""
    from ..hardware import pcm

    nm = nm if nm is not None else pcm_device()
    u = u.float().contiguous()
    if pcm.available(nm, u):  # aihwkit's maths in one native pass per stage
        p, nu, q = pcm.program(u.unsqueeze(0), nm)
        now = pcm.drift(p, nu, q, nm, seconds)[0][0]
        p = p[0]
    else:  # aihwkit's own functions (CUDA, or no native library)
        p, nu = nm.apply_programming_noise(u)
        now = nm.apply_drift_noise(p, nu, seconds)
    gain = p.abs().sum() / now.abs().sum().clamp(min=1e-12)
    return now * gain - u


def _quant(x: torch.Tensor, bits: int, bound: float) -> torch.Tensor:
    """aihwkit's converter grid: step = 2 * bound / (2^bits - 2), clipped to +-bound, straight through."""
    step = 2.0 * bound / (2**bits - 2)
    return _straight(x, torch.round(x.clamp(-bound, bound) / step) * step)


def periphery(x: torch.Tensor, w: torch.Tensor, mvm, hw: HardwareNoise, conv: bool, layer=None) -> torch.Tensor:
    """mvm(x, w) (no bias) through the tile's DAC, output noise and ADC, in the tile's normalised units.
    `layer`: the module, whose learned input range (`install_input_ranges`) replaces the abs-max scaling."""
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


def apply(model, noise, io, in_scales: dict[str, torch.Tensor] | None = None) -> int:
    """Put one HardwareNoise (from a recipe's noise / io sections) on every analog layer; returns how many.
    `noise` / `io` None: back to the seed's noise model. `in_scales`: s per layer name (`input_scales`)."""
    from .convert import analog_layers

    n = 0
    learned = noise is not None and io.input_range.mode == "learned"
    for name, layer in analog_layers(model):
        layer.analog.hw = None if noise is None else HardwareNoise(
            noise.scale, noise.model, noise.clip, noise.clip_value, io.out_noise, io.dac_bits, io.adc_bits,
            io.out_bound, (in_scales or {}).get(name), noise.seconds,
            noise.outlier_std if noise.outliers == "digital" else 0.0, noise.slicing_factor,
            noise.clip_when == "step", io.input_range if learned and type(layer).__name__ in RANGED else None)
        if layer.analog.hw is not None and layer.analog.hw.input_range is not None:
            if RANGE not in layer._parameters:
                p = next(layer.parameters())
                layer.register_parameter(RANGE, torch.nn.Parameter(
                    torch.full((), io.input_range.init_value, dtype=p.dtype, device=p.device)))
                layer.register_buffer(RANGE_SEEN, torch.zeros((), dtype=torch.long, device=p.device))
        elif RANGE in layer._parameters:
            del layer._parameters[RANGE], layer._buffers[RANGE_SEEN]
        n += 1
    return n


# -- learned static input ranges (io.input_range: learned): aihwkit-lightning's rule ------------------------

#: the parameter (and its init counter) a layer trains its input range in while hardware noise is on; in the
#: state dict, so MSNAT fusion averages it and checkpoints keep it; removed before the package is written
RANGE, RANGE_SEEN = "analog_input_range", "analog_input_range_seen"
#: the analog layer types whose forward runs the periphery (`layers._tile`)
RANGED = ("AnalogLinear", "AnalogConv1d", "AnalogConv2d", "AnalogConv3d", "AnalogHFConv1D")


class _RangeClip(torch.autograd.Function):
    """clamp(x, -r, r), aihwkit-lightning's StraightThroughClamp + InputRangeForward (nn/modules/torch_utils/
    torch_linear.py): x's gradient is zero where it clipped; r's is (the negative part of the gradient of the
    inputs clipped at +r, minus the positive part of those at -r) times r, plus decay x r while more than
    input_min_percentage of the inputs lie inside."""

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


def learned_input_ranges(model) -> dict[str, float]:
    """{layer name: r} of the layers that learned an input range."""
    from .convert import analog_layers

    return {name: float(layer._parameters[RANGE].detach()) for name, layer in analog_layers(model)
            if RANGE in layer._parameters}


@torch.no_grad()
def clip_step(model) -> None:
    """noise.clip_when: step - clip the analog layers' weights in place (after an optimizer step), as
    aihwkit-lightning's clip_weights: +-clip_value std of the layer (layer_std) or of each output channel."""
    from .convert import analog_layers

    for _, layer in analog_layers(model):
        hw = layer.analog.hw
        if hw is None or not hw.step_clip:
            continue
        channel_dim = 1 if type(layer).__name__ == "AnalogHFConv1D" else 0
        for pname in layer.analog_weights:
            w = layer.get_parameter(pname)
            if hw.clip == "fixed":
                w.clamp_(-hw.clip_value, hw.clip_value)
                continue
            if hw.clip == "layer_std":
                bound = hw.clip_value * w.std()
            else:
                bound = _view(hw.clip_value * _rows(w, channel_dim).std(1), w, channel_dim)
            torch.maximum(torch.minimum(w, bound), -bound, out=w)


def has_step_clip(model) -> bool:
    from .convert import analog_layers

    return any(layer.analog.hw is not None and layer.analog.hw.step_clip for _, layer in analog_layers(model))


#: the analog layer types whose input a per-channel scale can divide (their forward calls `_tile`)
SCALABLE = ("AnalogLinear", "AnalogConv1d", "AnalogConv2d", "AnalogConv3d")


def input_scales(pkg, model) -> tuple[dict[str, torch.Tensor], dict]:
    """The per-input-channel scales s certify will use for this package's mapping (noise.input_scaling:
    package): certify's own calibration (same inputs, same formula) on the package's clean weights.
    Returns ({layer name: s}, what the calibration ran on); empty where the mapping scales no inputs."""
    import copy

    from . import mapping as mp
    from .convert import analog_layers, to_digital

    m = mp.package_mapping(pkg.config).complete()
    if m.input_scaling != "channel":
        return {}, {}
    digital = to_digital(copy.deepcopy(model)).eval()
    m_clip = mp.MappingConfig.from_dict({**m.to_dict(), "clip": "none"})  # training clips in the forward pass
    batches, info = mp.calibration_batches(pkg.path, pkg.config, m_clip, None)
    cal = mp.calibrate(digital, batches, m_clip, info, mp.mapped_layers(digital, pkg.placement))
    kinds = {n: type(layer).__name__ for n, layer in analog_layers(model)}
    scales = {n: s.detach().clone() for n, s in cal.scales.items()
              if kinds.get(n) in SCALABLE and getattr(model.get_submodule(n), "groups", 1) == 1}
    return scales, {**info, "layers": len(scales)}


def trained_mapping(noise, io, input_ranges: dict[str, float] | None = None) -> dict:
    """What a recipe with these sections trained the package for, as config.json["mapping"] fields.
    `input_ranges`: the learned ones (`learned_input_ranges`), recorded with input_range: learned."""
    # weights clipped after every step are stored within the bound: certify programs them as they are (a
    # second clip at clip_value std of the clipped weights, whose std is smaller, would cut deeper than training)
    clipped = "none" if noise.clip_when == "step" else noise.clip
    out = {"weight_scaling": "column" if noise.scale == "channel" else "tile", "clip": clipped,
           "clip_value": noise.clip_value, "outliers": noise.outliers, "outlier_std": noise.outlier_std}
    # certify scales the inputs as training did: not at all (noise.input_scaling: none), or as the package's
    # mapping says (package: training calibrated its scales from that mapping, which then stays as it is)
    if noise.input_scaling == "none":
        out["input_scaling"] = "none"
    if io.input_range.mode == "learned":
        out.update(input_range="learned", input_ranges=dict(input_ranges or {}))
    trained_io = {k: getattr(io, k) for k in ("dac_bits", "adc_bits", "out_noise") if getattr(io, k)}
    if trained_io:
        out["io"] = trained_io
    return out
