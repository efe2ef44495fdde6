"""The fast certify engine: aihwkit's device statistics, the network's own fused forward.

    cert = analogai_deploy.certify("runs/lenet", engine="fast")      # CLI: certify PKG --engine fast

aihwkit's tiles simulate an analog layer as unfold + a Python-level IO-managed matmul per tile,
which costs 8-15x a digital pass. The statistics that decide a certificate are not in that loop
but in the noise model and the periphery, so this engine keeps those and drops the loop:

  * weights: every layer is cut into tiles exactly as aihwkit's TileModuleArray does (even splits
    of at most tile_size rows / columns), each tile mapped to max|w| = 1 (weight_scaling_omega = 1).
    Per repeat: `noise_model.apply_programming_noise` (programming noise + drift coefficients nu)
    and per time `noise_model.apply_drift_noise` (drift + read noise): aihwkit's own classes, on
    the same normalised tile weights aihwkit's tiles hold.
  * drift compensation: GlobalDriftCompensation's readout (mean |tile(eye)| through the noisy,
    quantised periphery) at programming and at time t, alpha = baseline / current, as aihwkit does.
  * forward: the ordinary F.linear / F.conv2d with the effective weights, and around it the torch
    tile's periphery: ABS_MAX noise management per input vector (per conv patch: a max-pool of
    |x|), DAC quantisation, output noise, ADC quantisation and clipping at out_bound, iterative
    bound management (halve the inputs and redo the tile while any output of the batch clips).

Linear layers are exact: given the same effective weights, their outputs equal aihwkit's bit for bit
up to float rounding. One approximation, for convolutions only: aihwkit rounds every im2col patch
on its own DAC grid (step = patch max * 2 / (2^b - 2)), which a fused convolution cannot do. Here
the rounding error is drawn instead, as the noise it is statistically: uniform over one grid step on
every non-zero input (zeros convert exactly), so the output gets Gaussian noise of variance
step^2 / 12 * (fraction of non-zero inputs) * sum_j w_oj^2 on top of out_noise^2, before the ADC.
That matches the error's size per output, not its exact value; the agreement test and BENCHMARKS.md
check that accuracy statistics agree. `FastModel(..., exact=True)` runs convolutions as aihwkit
does (im2col through the tile periphery, bit-exact, ~2x slower). Settings only aihwkit's C++ tiles
have (n_w, the standard-hwa preset) are refused: use the aihwkit engine for those.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

ENGINES = ("aihwkit", "fast")


@dataclass
class _Tile:
    """One crossbar: rows out_lo:out_hi, flattened inputs in_lo:in_hi of the layer's [out, in] weight."""

    out_lo: int
    out_hi: int
    in_lo: int
    in_hi: int
    scale: torch.Tensor  # max|w| of the tile: the digital factor the output is multiplied back by
    ref: torch.Tensor  # normalised target weights, max|w| = 1
    programmed: torch.Tensor | None = None
    nu: Any = None
    baseline: torch.Tensor | None = None
    current: torch.Tensor | None = None
    alpha: torch.Tensor | float = 1.0  # drift compensation factor


def _splits(size: int, max_size: int) -> list[tuple[int, int]]:
    """aihwkit's TileModuleArray.get_split_sizes: n = ceil(size / max) near-equal parts."""
    if max_size <= 0:
        return [(0, size)]
    n = (size + max_size - 1) // max_size
    base, extra = divmod(size, n)
    out, lo = [], 0
    for i in range(n):
        hi = lo + base + (i < extra)
        out.append((lo, hi))
        lo = hi
    return out


def check_supported(device) -> None:
    """Refuse the settings the fast engine does not simulate (those of aihwkit's C++ tiles)."""
    need = device.needs_cpp() or ("--tile cpp" if device.tile == "cpp" else "")
    if need:
        raise UsageError(f"the fast engine simulates aihwkit's PyTorch tile; {need} needs the C++ tile",
                         "use --engine aihwkit for this setting")


def _step(res: float, bound: float) -> float:
    """aihwkit's quantisation step: res (or 1 / states when res > 1) times the full range 2 * bound."""
    return (1 / res if res > 1.0 else res) * 2 * bound


def _quantize(x: torch.Tensor, res: float, bound: float) -> torch.Tensor:
    """aihwkit's UniformQuantize (deterministic rounding)."""
    step = _step(res, bound)
    return torch.round(x / step) * step


def _patch_max(a: torch.Tensor, k, s, p, d) -> torch.Tensor:
    """The max of `a` (>= 0) over every conv patch (zero padding counts, as in aihwkit's unfold).
    Same values as F.max_pool2d, which is several times slower on one channel on CPU."""
    ap = F.pad(a, (p[1], p[1], p[0], p[0]))
    oh = (a.shape[2] + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (a.shape[3] + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    m = None
    for i in range(k[0]):
        for j in range(k[1]):
            v = ap[:, :, i * d[0]:i * d[0] + s[0] * (oh - 1) + 1:s[0], j * d[1]:j * d[1] + s[1] * (ow - 1) + 1:s[1]]
            m = v if m is None else torch.maximum(m, v)
    return m


class FastLayer:
    """The analog state of one nn.Linear / nn.Conv2d: its tiles and the IO parameters of its tile kind."""

    def __init__(self, module: nn.Module, rpu):
        self.module = module
        self.io = rpu.forward
        self.noise_model = rpu.noise_model
        self.compensation = rpu.drift_compensation
        self.perfect = bool(self.io.is_perfect)
        w = module.weight.detach().reshape(module.weight.shape[0], -1).float()
        self.shape = module.weight.shape
        out_size, in_size = w.shape
        omega = rpu.mapping.weight_scaling_omega
        columnwise = bool(rpu.mapping.weight_scaling_columnwise)
        #: a static input range (calibrated, aihwkit pre_post.input_range) replacing the abs-max scaling
        self.input_range: float | None = None
        self.tiles: list[_Tile] = []
        for in_lo, in_hi in _splits(in_size, rpu.mapping.max_input_size):
            for out_lo, out_hi in _splits(out_size, rpu.mapping.max_output_size):
                part = w[out_lo:out_hi, in_lo:in_hi]
                # as aihwkit's apply_weight_scaling: alpha = max|w| / omega, per tile or per output column
                # (1 where the tile / column is all zeros)
                if not (omega and omega > 0):
                    wmax = torch.ones(1)
                elif columnwise:
                    wmax = part.abs().amax(1) / omega
                else:
                    wmax = part.abs().max().view(1) / omega
                wmax[wmax == 0.0] = 1.0
                self.tiles.append(_Tile(out_lo, out_hi, in_lo, in_hi, wmax, part / wmax.view(-1, 1)))
        self.in_chunks = sorted({(t.in_lo, t.in_hi) for t in self.tiles})
        self.eye: dict[int, torch.Tensor] = {}
        from aihwkit.inference.compensation.drift import GlobalDriftCompensation, PerColumnDriftCompensation

        # the global and the per-column compensation read out with eye(n); subclasses may read out otherwise
        self._one_hot_readout = type(self.compensation) in (GlobalDriftCompensation, PerColumnDriftCompensation)
        self._q1 = float(self._dac(torch.ones(1))[0]) if self.io.inp_res > 0 else 1.0

    # -- the device model (aihwkit's own classes) -------------------------------------------------------
    def _readout(self, weights: torch.Tensor) -> torch.Tensor:
        """The compensation's readout of the tile forward on its read-out tensor (the drift baseline)."""
        return self.compensation.readout(self._readout_forward(weights))

    def _alpha(self, weights: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        """The compensation factor at the current weights (`apply` reads out itself, as in aihwkit)."""
        return self.compensation.apply(self._readout_forward(weights), baseline)

    def _readout_forward(self, weights: torch.Tensor) -> torch.Tensor:
        """The tile forward on the compensation's read-out tensor (one-hot rows)."""
        n = weights.shape[1]
        if n not in self.eye:
            self.eye[n] = self.compensation.get_readout_tensor(n)
        out = None
        if self._one_hot_readout and not self.perfect:
            # one-hot rows: noise management scales by 1, the DAC maps 1 to q1, so the MVM is q1 * W^T
            # exactly; the periphery then runs as usual (the full path only if that clips)
            out, ok = self._finalize(weights.T * self._q1)
            out = out if ok else None
        if out is None:
            out = self._tile_mvm(self.eye[n], weights)
        return out

    @torch.no_grad()
    def program(self) -> None:
        for t in self.tiles:
            t.programmed, t.nu = self.noise_model.apply_programming_noise(t.ref)
            t.current = t.programmed
            t.alpha = 1.0
            if self.compensation is not None:
                t.baseline = self._readout(t.programmed)

    @torch.no_grad()
    def drift(self, seconds: float) -> None:
        for t in self.tiles:
            t.current = self.noise_model.apply_drift_noise(t.programmed, t.nu, seconds)
            if self.compensation is not None:
                t.alpha = self._alpha(t.current, t.baseline)

    # -- the periphery (aihwkit's AnalogMVM.matmul for the torch tile) ------------------------------------
    def _finalize(self, y: torch.Tensor, extra_var: torch.Tensor | None = None) -> tuple[torch.Tensor, bool]:
        """Output noise, ADC, clipping (in place on a fresh `y`); returns the outputs and whether nothing
        clipped (the bound test). `extra_var`: variance added to the output noise (the fused conv's DAC error)."""
        io = self.io
        if extra_var is not None:
            y.add_(torch.randn_like(y).mul_(torch.sqrt(io.out_noise**2 + extra_var)))
        elif io.out_noise > 0:
            y.add_(torch.randn_like(y).mul_(io.out_noise))
        if io.out_res > 0:
            step = _step(io.out_res, io.out_bound)
            y.div_(step).round_().mul_(step)
        if io.out_bound <= 0:
            return y, True
        low, high = torch.aminmax(y)
        ok = bool(high <= io.out_bound) and bool(low >= -io.out_bound)
        return y.clamp_(-io.out_bound, io.out_bound), ok

    def _managed(self, compute, nm: torch.Tensor, extra_var: torch.Tensor | None = None,
                 post: torch.Tensor | None = None) -> torch.Tensor:
        """AnalogMVM.matmul's iterative bound management around `compute(input scale) -> normalised outputs`:
        while any output of the batch clips, halve the inputs and redo the tile (fresh noise). The
        arithmetic follows aihwkit's order (scale = 1 / nm / reduction), so DAC rounding matches bit for bit.
        `post`: the digital factors after the tile (mapping scale x drift compensation), folded into one
        multiply (fused path; the exact path applies them one by one, in aihwkit's order)."""
        from aihwkit.simulator.parameters.enums import BoundManagementType

        io = self.io
        managed = io.bound_management != BoundManagementType.NONE
        inp_res = io.inp_res
        if inp_res > 0:
            inp_res = (1 / inp_res if inp_res > 1.0 else inp_res) * 2.0 * io.inp_bound
        red = 0.5 if managed else 1.0
        while True:
            if managed:
                red *= 2.0
            scale = (1.0 / nm) / red
            y, ok = self._finalize(compute(scale), extra_var)
            if (not managed or ok or red > io.max_bm_factor
                    or (inp_res > 0 and red > io.max_bm_res / inp_res)):
                if post is not None:
                    return y.mul_((io.out_scale / scale) * post)
                return y * (io.out_scale / scale)

    def _dac(self, x: torch.Tensor) -> torch.Tensor:
        io = self.io
        if io.inp_res > 0:
            x = _quantize(x, io.inp_res, io.inp_bound)
        bound = io.inp_bound if io.inp_bound > 0 else math.inf
        return x.clamp(-bound, bound)

    def _nm(self, absmax: torch.Tensor) -> torch.Tensor:
        from aihwkit.simulator.parameters.enums import NoiseManagementType

        io = self.io
        if io.noise_management == NoiseManagementType.NONE:
            return torch.ones_like(absmax)
        if io.noise_management != NoiseManagementType.ABS_MAX:
            raise UsageError(f"the fast engine implements ABS_MAX noise management, not {io.noise_management.name}",
                             "use --engine aihwkit")
        if io.nm_thres > 0:
            absmax = absmax.clamp(max=io.nm_thres)
        return torch.where(absmax > 0, absmax, torch.ones_like(absmax))

    def _tile_mvm(self, x: torch.Tensor, w: torch.Tensor, ranged: bool = False) -> torch.Tensor:
        """One tile on [N, in] inputs, exactly as AnalogMVM.matmul (noise + bound management).
        `ranged`: a layer input, scaled by the static input range when there is one (the drift read-out is not)."""
        if self.perfect:
            return x @ w.T
        if ranged and self.input_range is not None:
            nm = x.new_full((*x.shape[:-1], 1), self.input_range)
        else:
            nm = self._nm(x.abs().amax(-1, keepdim=True))
        return self._managed(lambda scale: self._dac(x * scale) @ w.T, nm)

    def _clip_input(self, x: torch.Tensor) -> torch.Tensor:
        """aihwkit's apply_input_range: inputs beyond a static range clip (before the tile)."""
        if self.input_range is None or self.perfect:
            return x
        return x.clamp(-self.input_range, self.input_range)

    # -- the layer forward --------------------------------------------------------------------------------
    def linear(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        out = self._tiles_mvm(x, m.out_features)
        return out if m.bias is None else out + m.bias

    def _tiles_mvm(self, x: torch.Tensor, out_features: int) -> torch.Tensor:
        out = None
        x = self._clip_input(x)
        for t in self.tiles:
            y = self._tile_mvm(x[..., t.in_lo:t.in_hi], t.current, ranged=True) * t.scale * t.alpha
            if len(self.tiles) > 1:
                full = x.new_zeros(*x.shape[:-1], out_features)
                full[..., t.out_lo:t.out_hi] = y
                y = full
            out = y if out is None else out + y
        return out

    def conv_unfolded(self, x: torch.Tensor) -> torch.Tensor:
        """The exact conv periphery: im2col patches through the tiles, as aihwkit's AnalogConv2d."""
        m = self.module
        k, s, p, d = m.kernel_size, m.stride, m.padding, m.dilation
        cols = F.unfold(x, k, d, p, s).transpose(1, 2)  # [N, L, C*kh*kw]
        y = self._tiles_mvm(cols, self.shape[0]).transpose(1, 2)
        oh = (x.shape[2] + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        y = y.reshape(x.shape[0], self.shape[0], oh, -1)
        return y if m.bias is None else y + m.bias.view(1, -1, 1, 1)

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        k, s, p, d = m.kernel_size, m.stride, m.padding, m.dilation
        if self.perfect:
            w = self._full_weight(None)
            return F.conv2d(x, w, m.bias, s, p, d)
        kk = k[0] * k[1]
        nonzero = None
        out = 0.0
        x = self._clip_input(x)
        for in_lo, in_hi in self.in_chunks:
            w = self._full_weight((in_lo, in_hi))  # normalised effective weights of this input chunk
            xin = x
            if in_lo % kk == 0 and in_hi % kk == 0:  # the chunk holds whole channels: convolve only those
                xin, w = x[:, in_lo // kk:in_hi // kk], w[:, in_lo // kk:in_hi // kk]
                # the patch max = a max over shifted views of the channel max
                nm = _patch_max(xin.abs().amax(1, keepdim=True), k, s, p, d)
            else:  # a chunk that splits a channel's kernel: the patch max from im2col columns
                cols = F.unfold(x.abs(), k, d, p, s)[:, in_lo:in_hi]  # [N, chunk, L]
                oh = (x.shape[2] + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
                nm = cols.amax(1).reshape(x.shape[0], 1, oh, -1)
            nm = self._nm(nm) if self.input_range is None else torch.full_like(nm, self.input_range)
            extra = None
            if self.io.inp_res > 0:  # DAC rounding: uniform over one grid step per non-zero input (zeros are exact)
                step = _step(self.io.inp_res, self.io.inp_bound)
                if nonzero is None:
                    nonzero = x.sign().abs().mean()  # the fraction of non-zero inputs (fastest form on CPU)
                extra = (step**2 / 12.0 * nonzero * w.pow(2).flatten(1).sum(1)).view(1, -1, 1, 1)
            conv = F.conv2d(xin, w, None, s, p, d)
            y = self._per_out_tile(lambda scale, conv=conv: conv * scale, nm, in_lo, extra)
            out = y if len(self.in_chunks) == 1 else out + y
        return out if m.bias is None else out.add_(m.bias.view(1, -1, 1, 1))

    def _full_weight(self, chunk: tuple[int, int] | None) -> torch.Tensor:
        out_size = self.shape[0]
        flat = torch.zeros(out_size, math.prod(self.shape[1:]))
        for t in self.tiles:
            if chunk is None or (t.in_lo, t.in_hi) == chunk:
                w = t.current if not self.perfect else t.ref * t.scale.view(-1, 1)
                flat[t.out_lo:t.out_hi, t.in_lo:t.in_hi] = w
        return flat.reshape(self.shape)

    def _per_out_tile(self, compute, nm: torch.Tensor, in_lo: int, extra: torch.Tensor | None) -> torch.Tensor:
        """Each output tile of one input chunk runs its own bound management, then its digital scales."""
        tiles = [t for t in self.tiles if t.in_lo == in_lo]
        if len(tiles) == 1:
            t = tiles[0]
            return self._managed(compute, nm, extra, _per_channel(t.scale * t.alpha))
        parts = []
        for t in tiles:
            part = None if extra is None else extra[:, t.out_lo:t.out_hi]
            parts.append(self._managed(lambda scale, t=t: compute(scale)[:, t.out_lo:t.out_hi].clone(), nm, part,
                                       _per_channel(t.scale * t.alpha)))
        return torch.cat(parts, 1)


def _per_channel(post: torch.Tensor | float) -> torch.Tensor | float:
    """Per-column digital factors (one per output channel) shaped for a conv output [N, C, H, W]."""
    if isinstance(post, torch.Tensor) and post.numel() > 1:
        return post.view(1, -1, 1, 1)
    return post


class _FastLinear(nn.Linear):
    def forward(self, x):
        return self._fast.linear(x)


class _FastConv2d(nn.Conv2d):
    def forward(self, x):
        return self._fast.conv_unfolded(x) if self._fast.exact else self._fast.conv(x)


class FastModel(nn.Module):
    """A copy of the digital model whose nn.Linear / nn.Conv2d layers run through FastLayer."""

    fast_engine = True  # certification.monte_carlo hands such models to this module's monte_carlo

    def __init__(self, digital: nn.Module, rpu, exact: bool = False):
        super().__init__()
        self.model = copy.deepcopy(digital).eval()
        self.layers: list[FastLayer] = []
        skipped = []
        for name, mod in self.model.named_modules():
            kind = type(mod)
            if kind is nn.Linear:  # aihwkit converts exact classes only; so does this engine
                mod.__class__ = _FastLinear
            elif kind is nn.Conv2d:
                if mod.groups != 1 or mod.padding_mode != "zeros" or isinstance(mod.padding, str):
                    skipped.append(f"{name} (groups/padding mode)")
                    continue
                mod.__class__ = _FastConv2d
            elif kind in (nn.Conv1d, nn.Conv3d, nn.LSTM, nn.RNN, nn.GRU, nn.ConvTranspose2d):
                skipped.append(f"{name} ({kind.__name__})")
                continue
            else:
                continue
            mod._fast = FastLayer(mod, rpu)
            mod._fast.exact = exact
            self.layers.append(mod._fast)
        if skipped:
            raise UsageError(f"the fast engine covers nn.Linear and plain nn.Conv2d; this model also has "
                             f"{', '.join(skipped[:3])}", "use --engine aihwkit")

    def _setup_batched(self) -> None:
        """PCM-like noise models act element by element on conductances, and the single-pair converter
        maps each tile by its own max|w|: so all tiles of the model can go through aihwkit's conductance
        functions in one call, with per-tile scale ratios applied element-wise (same numbers as per tile)."""
        from aihwkit.inference import PCMLikeNoiseModel
        from aihwkit.inference.converter.conductance import SinglePairConductanceConverter

        self.tiles = [t for layer in self.layers for t in layer.tiles]
        nm = self.layers[0].noise_model if self.layers else None
        self.batched = (type(nm) is PCMLikeNoiseModel and type(nm.g_converter) is SinglePairConductanceConverter
                        and len(self.tiles) > 1)
        if not self.batched:
            return
        self.sizes = [t.ref.numel() for t in self.tiles]
        self.ref = torch.cat([t.ref.flatten() for t in self.tiles])
        self.ref_ratio = self._ratio(self.ref)

    def _ratio(self, flat: torch.Tensor) -> torch.Tensor:
        """SinglePairConductanceConverter's scale_ratio of every tile, one value per element."""
        conv = self.layers[0].noise_model.g_converter
        maxima = torch.stack([part.abs().max() for part in flat.split(self.sizes)])
        ratio = (conv.g_max - conv.g_min) / maxima.clamp(min=1e-7)  # aihwkit's _ZERO_CLIP
        return ratio.repeat_interleave(torch.tensor(self.sizes))

    def _to_g(self, w: torch.Tensor, ratio: torch.Tensor) -> list[torch.Tensor]:
        conv = self.layers[0].noise_model.g_converter
        scaled = w * ratio
        return [scaled.clamp(min=0.0, max=conv.g_max) + conv.g_min,
                (-scaled).clamp(min=0.0, max=conv.g_max) + conv.g_min]

    def _from_g(self, g: list[torch.Tensor], ratio: torch.Tensor) -> torch.Tensor:
        conv = self.layers[0].noise_model.g_converter
        return ((g[0] - conv.g_min) - (g[1] - conv.g_min)) / ratio

    def _scatter(self, flat: torch.Tensor, attr: str) -> None:
        for t, part in zip(self.tiles, flat.split(self.sizes)):
            setattr(t, attr, part.view_as(t.ref))

    @torch.no_grad()
    def program(self) -> None:
        if not hasattr(self, "batched"):
            self._setup_batched()
        if not self.batched:
            for layer in self.layers:
                layer.program()
            return
        nm = self.layers[0].noise_model
        g = self._to_g(self.ref, self.ref_ratio)
        prog = [nm.apply_programming_noise_to_conductance(gi) for gi in g]
        self.nu = [nm.generate_drift_coefficients(gi) for gi in g]
        self.programmed = self._from_g(prog, self.ref_ratio)
        self._scatter(self.programmed, "programmed")
        for layer in self.layers:
            for t in layer.tiles:
                t.current, t.alpha = t.programmed, 1.0
                if layer.compensation is not None:
                    t.baseline = layer._readout(t.programmed)

    @torch.no_grad()
    def drift(self, seconds: float) -> None:
        if not self.batched:
            for layer in self.layers:
                layer.drift(seconds)
            return
        nm = self.layers[0].noise_model
        ratio = self._ratio(self.programmed)  # aihwkit converts the programmed weights by their own max
        g = self._to_g(self.programmed, ratio)
        drifted = [nm.apply_drift_noise_to_conductance(gi, nu, seconds) for gi, nu in zip(g, self.nu)]
        self._scatter(self._from_g(drifted, ratio), "current")
        for layer in self.layers:
            if layer.compensation is not None:
                for t in layer.tiles:
                    t.alpha = layer._alpha(t.current, t.baseline)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def conversion(self) -> dict[str, Any]:
        """The certificate's conversion block, counted as aihwkit's conversion would."""
        total = sum(p.numel() for p in self.model.parameters())
        analog = {id(layer.module) for layer in self.layers}
        digital: dict[str, int] = {}
        for m in self.model.modules():
            if id(m) not in analog and list(m.parameters(recurse=False)):
                digital[type(m).__name__] = digital.get(type(m).__name__, 0) + 1
        return {"analog_layers": len(self.layers), "tiles": sum(len(layer.tiles) for layer in self.layers),
                "analog_weights": sum(math.prod(layer.shape) for layer in self.layers),
                "digital_modules": digital, "total_params": total}
