"""The fast certify engine: aihwkit's device statistics, the network's own fused forward.

    cert = analogai_deploy.certify("runs/lenet", engine="fast")      # CLI: certify PKG --engine fast

aihwkit's tiles simulate an analog layer as unfold + a Python-level IO-managed matmul per tile,
which costs 8-15x a digital pass. The statistics that decide a certificate are not in that loop
but in the noise model and the periphery, so this engine keeps those and drops the loop:

  * weights: every layer is cut into tiles exactly as aihwkit's TileModuleArray does (even splits
    of at most tile_size rows / columns); a grouped convolution (depthwise included) gives every
    group its own tiles, its [out / groups, in / groups * kh * kw] matrix split the same way. Each
    tile is mapped to max|w| = 1 (weight_scaling_omega = 1). Per repeat programming (programming noise
    + drift coefficients nu) and per time drift (drift + read noise), on the same normalised tile
    weights aihwkit's tiles hold. aihwkit's PCM (PCMLikeNoiseModel, single device pair, g_min = 0)
    runs as one native pass per bank (pcm.py: aihwkit's maths, exact shortcuts, tests/test_pcm.py
    compares it with aihwkit's functions); other noise models run aihwkit's own classes. Tiles of one
    shape are stacked in a bank; on aihwkit's classes, PCM-like models (element-wise conductance
    functions, one device pair) run a bank in slices of at most BATCH_ELEMENTS weights per call (per
    tile scale ratios), other noise models per tile.
  * drift compensation: GlobalDriftCompensation's readout (mean |tile(eye)| through the noisy,
    quantised periphery) at programming and at time t, alpha = baseline / current, as aihwkit does,
    for a whole bank at once (native PCM: fused into the drift pass).
  * forward: the ordinary F.linear / F.conv2d with the effective weights, and around it the torch
    tile's periphery: ABS_MAX noise management per input vector (per conv patch and input chunk: a
    max over shifted strided views of |x|, the kernel/stride/padding/dilation's patches, no im2col),
    DAC quantisation, output noise, ADC quantisation and clipping at out_bound, iterative bound
    management per tile (halve the inputs and redo the tile while any output of the batch clips).
    A chunk of a convolution's inputs that splits a channel's kernel convolves only the channels it
    touches, with the kernel positions outside the chunk zeroed.

Linear layers are exact: given the same effective weights, their outputs equal aihwkit's bit for bit
up to float rounding. One approximation, for convolutions only: aihwkit rounds every im2col patch
on its own DAC grid (step = patch max * 2 / (2^b - 2)), which a fused convolution cannot do. Here
the rounding error is drawn instead, as the noise it is statistically: uniform over one grid step on
every non-zero input (zeros convert exactly), so the output gets Gaussian noise of variance
step^2 / 12 * (fraction of non-zero inputs) * sum_j w_oj^2 on top of out_noise^2, before the ADC.
That matches the error's size per output, not its exact value; the agreement test and BENCHMARKS.md
check that accuracy statistics agree. `FastModel(..., exact=True)` runs convolutions as aihwkit
does (im2col through the tile periphery, bit-exact, ~2x slower; ungrouped convolutions only).
Settings only aihwkit's C++ tiles have (n_w, the standard-hwa preset) are refused: use the aihwkit
engine for those. Output noise is drawn by hardware/native (the training noise's generator) where it
is built, else by torch.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OperationFailed, UsageError

ENGINES = ("aihwkit", "fast")
#: what certify runs when no engine is named: `choose`
DEFAULT_ENGINE = "auto"
#: weights per call of the noise model on a bank: small tiles go many to a call (the per-call cost
#: dominates), large ones one at a time (element-wise temporaries of ~1 MB stay in cache)
BATCH_ELEMENTS = 1 << 18


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
    need = device.needs_cpp() or ("`tile=cpp`" if device.tile == "cpp" else "")
    if need:
        raise UsageError(f"the fast engine simulates aihwkit's PyTorch tile; {need} needs the C++ tile",
                         "use `engine=aihwkit` for this setting")


def choose(device, rpu, placement) -> tuple[str, str]:
    """The engine certify runs when none is named, and why: the fast engine (the faster one) where it is
    validated against aihwkit, i.e. aihwkit's PyTorch tile settings, a PCM noise model the native pass
    simulates (tests/test_pcm.py, the agreement tests), ABS_MAX or no noise management and layer kinds
    it maps; else the aihwkit engine, saying which condition failed."""
    from aihwkit.simulator.parameters.enums import NoiseManagementType

    from ..hardware import pcm

    need = device.needs_cpp()
    why = ""
    if need:
        why = f"{need} needs aihwkit's C++ tile"
    elif device.tile != "auto":
        why = f"--tile {device.tile} names aihwkit's tiles"
    elif not pcm.supported(rpu.noise_model):
        why = f"the fast engine is validated on PCM noise models, not {type(rpu.noise_model).__name__}"
    elif rpu.forward.noise_management not in (NoiseManagementType.ABS_MAX, NoiseManagementType.NONE):
        why = f"the fast engine implements ABS_MAX noise management, not {rpu.forward.noise_management.name}"
    elif placement is not None and any(e.kind == "custom" for e in placement.analog):
        why = "a layer added with register_layer has no fast-engine mapping"
    if why:
        return "aihwkit", f"default; not fast: {why}"
    return "fast", "default: the fastest engine validated for this device and package"


def _step(res: float, bound: float) -> float:
    """aihwkit's quantisation step: res (or 1 / states when res > 1) times the full range 2 * bound."""
    return (1 / res if res > 1.0 else res) * 2 * bound


def _quantize(x: torch.Tensor, res: float, bound: float) -> torch.Tensor:
    """aihwkit's UniformQuantize (deterministic rounding)."""
    step = _step(res, bound)
    return torch.round(x / step) * step


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _patch_max(a: torch.Tensor, k, s, p, d, offsets=None) -> torch.Tensor:
    """The max of `a` (>= 0, [N, C, H, W]) over every conv patch, per channel; zero padding counts, as in
    aihwkit's unfold. `offsets`: the kernel positions (i, j) to include (default all). Shifted strided
    views: same values as F.max_pool2d, which is several times slower on few channels on CPU."""
    ap = F.pad(a, (p[1], p[1], p[0], p[0])) if p[0] or p[1] else a
    oh, ow = _out_size(a.shape[2], k[0], s[0], p[0], d[0]), _out_size(a.shape[3], k[1], s[1], p[1], d[1])
    m = None
    for i, j in offsets if offsets is not None else ((i, j) for i in range(k[0]) for j in range(k[1])):
        v = ap[:, :, i * d[0]:i * d[0] + s[0] * (oh - 1) + 1:s[0], j * d[1]:j * d[1] + s[1] * (ow - 1) + 1:s[1]]
        if m is None:
            m = v.clone(memory_format=torch.contiguous_format)
        else:
            torch.maximum(m, v, out=m)
    return m


def _normal_(y: torch.Tensor, std: float) -> torch.Tensor:
    """y += std * N(0, 1), in place (hardware/native's generator on CPU float32, else torch's)."""
    from ..hardware.draws import native

    lib = native(y) if y.is_contiguous() else None
    if lib is None:
        return y.add_(torch.randn_like(y).mul_(std))
    lib.add_normal(y.data_ptr(), y.data_ptr(), y.numel(), std, int(torch.randint(0, 2**62, ()).item()))
    return y


def _native_for(t: torch.Tensor):
    """hardware/native's library where it applies to t (CPU float32), else None."""
    if t.device.type != "cpu" or t.dtype != torch.float32:
        return None
    from ..hardware.native import library

    lib = library()
    if lib is not None:
        lib.set_threads(torch.get_num_threads())  # its passes split over tiles or rows as torch's ops do
    return lib


def _normal_like(y: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(y)
    return _normal_(z, 1.0)


@dataclass
class _Bank:
    """Tiles of one layer that share a [rows, cols] shape, stacked ([T, rows, cols])."""

    ref: torch.Tensor  # normalised target weights, max|w| = 1 per tile
    scale: torch.Tensor  # [T] max|w| of each tile: the digital factor its output is multiplied back by
    programmed: torch.Tensor | None = None
    nu: Any = None  # per tile (list) or stacked (list of tensors) drift coefficients; native PCM: [T, rows, cols]
    q: torch.Tensor | None = None  # native PCM: each programmed weight's read-noise factor (pcm.py)
    buffer: torch.Tensor | None = None  # native PCM: the drifted weights' memory, reused every time point
    current: torch.Tensor | None = None
    baseline: torch.Tensor | None = None  # [T] drift-compensation readout at programming
    alpha: torch.Tensor = field(default_factory=lambda: torch.ones(1))  # [T] drift compensation factors


class _Tile:
    """One crossbar: rows out_lo:out_hi, flattened inputs in_lo:in_hi of group `group`'s [out, in] matrix.
    A view into its bank (reads and writes go there)."""

    def __init__(self, layer: "FastLayer", group: int, out_lo: int, out_hi: int, in_lo: int, in_hi: int):
        self.layer, self.group = layer, group
        self.out_lo, self.out_hi, self.in_lo, self.in_hi = out_lo, out_hi, in_lo, in_hi
        self.bank: _Bank
        self.index = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.out_hi - self.out_lo, self.in_hi - self.in_lo

    @property
    def scale(self) -> torch.Tensor:
        return self.bank.scale[self.index]

    @property
    def ref(self) -> torch.Tensor:
        return self.bank.ref[self.index]

    @property
    def programmed(self) -> torch.Tensor:
        return self.bank.programmed[self.index]

    @property
    def current(self) -> torch.Tensor:
        return self.bank.current[self.index]

    @current.setter
    def current(self, value: torch.Tensor) -> None:
        if self.bank.current is self.bank.programmed:
            self.bank.current = self.bank.current.clone()
        self.bank.current[self.index] = value
        self.layer._weights = None

    @property
    def alpha(self) -> torch.Tensor:
        return self.bank.alpha[self.index]

    @alpha.setter
    def alpha(self, value) -> None:
        value = torch.as_tensor(value, dtype=self.bank.alpha.dtype)
        bank = self.bank
        if value.numel() > 1 and bank.alpha.dim() == 1:  # per-column factors: widen the bank's
            bank.alpha = bank.alpha[:, None].expand(bank.ref.shape[0], bank.ref.shape[1]).clone()
        bank.alpha[self.index] = value.reshape(bank.alpha[self.index].shape) if value.numel() > 1 else value.reshape(())
        self.layer._weights = None


class FastLayer:
    """The analog state of one nn.Linear / nn.Conv1d / 2d / 3d: its tiles (in banks) and the IO parameters of
    its tile. A Conv1d runs as a Conv2d over a height-1 input (weight [out, in / g, 1, k]), as aihwkit's
    GroupedConv runs it on AnalogConv2d; a Conv3d runs its im2col rows through its tiles, as GroupedConv runs
    them on AnalogLinear."""

    def __init__(self, module: nn.Module, rpu, groups: int = 1):
        self.module = module
        self.io = rpu.forward
        self.noise_model = rpu.noise_model
        self.compensation = rpu.drift_compensation
        self.perfect = bool(self.io.is_perfect)
        self.groups = groups
        self.dims = module.weight.dim() - 2  # 0: linear
        self.is_conv = self.dims > 0
        w = module.weight.detach().float()
        if self.dims == 1:
            w = w.unsqueeze(2)
        self.shape = w.shape
        if self.is_conv:
            self._geometry(module)
        out_size = self.shape[0] // groups
        self.kk = math.prod(self.shape[2:]) if self.is_conv else 1
        in_size = math.prod(self.shape[1:])  # per group: in_channels / groups * kh * kw
        omega = rpu.mapping.weight_scaling_omega
        columnwise = bool(rpu.mapping.weight_scaling_columnwise)
        #: a static input range (calibrated, aihwkit pre_post.input_range) replacing the abs-max scaling
        self.input_range: float | None = None
        self.tiles: list[_Tile] = []
        parts: list[torch.Tensor] = []
        for g in range(groups):
            wg = w[g * out_size:(g + 1) * out_size].reshape(out_size, -1)
            for in_lo, in_hi in _splits(in_size, rpu.mapping.max_input_size):
                for out_lo, out_hi in _splits(out_size, rpu.mapping.max_output_size):
                    self.tiles.append(_Tile(self, g, out_lo, out_hi, in_lo, in_hi))
                    parts.append(wg[out_lo:out_hi, in_lo:in_hi])
        self.banks: list[_Bank] = []
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(self.tiles):
            by_shape.setdefault(t.shape, []).append(i)
        for idx in by_shape.values():
            stack = torch.stack([parts[i] for i in idx])
            # as aihwkit's apply_weight_scaling: alpha = max|w| / omega, per tile ([T]) or per output column
            # ([T, rows]); 1 where the tile / column is all zeros
            if not (omega and omega > 0):
                wmax = torch.ones(len(idx))
            elif columnwise:
                wmax = stack.abs().amax(2) / omega
            else:
                wmax = stack.abs().amax((1, 2)) / omega
            wmax[wmax == 0.0] = 1.0
            bank = _Bank(stack / wmax.view(len(idx), -1, 1), wmax, alpha=torch.ones(len(idx)))
            self.banks.append(bank)
            for j, i in enumerate(idx):
                self.tiles[i].bank, self.tiles[i].index = bank, j
        self.in_chunks = sorted({(t.in_lo, t.in_hi) for t in self.tiles})
        # one tile per group (every ungrouped layer that fits a tile, every depthwise conv): the whole layer
        # runs as one conv/matmul with per-group periphery
        self.one_tile_per_group = len(self.tiles) == groups
        self.eye: dict[int, torch.Tensor] = {}
        from aihwkit.inference.compensation.drift import GlobalDriftCompensation, PerColumnDriftCompensation

        # the global and the per-column compensation read out with eye(n); subclasses may read out otherwise
        self._one_hot_readout = type(self.compensation) in (GlobalDriftCompensation, PerColumnDriftCompensation)
        self._per_column = type(self.compensation) is PerColumnDriftCompensation
        self._q1 = float(self._dac(torch.ones(1))[0]) if self.io.inp_res > 0 else 1.0
        self._weights = None  # effective weights per (group, chunk), rebuilt after program / drift
        self._parts = None  # native patch_absmax parts (per layer structure)
        self.exact = False

    def _geometry(self, m: nn.Module) -> None:
        """The conv's kernel, stride, padding and dilation (a Conv1d's in 2-d, height 1), and the explicit
        padding applied before it where tiles.GroupedConv pads explicitly (string padding, a non-zero padding
        mode, every Conv3d: its im2col does not pad)."""
        from ..analog.tiles import _explicit_padding

        k, s, p, d = m.kernel_size, m.stride, m.padding, m.dilation
        self.pad, self.pad_mode = None, "constant"
        if self.dims == 3 or isinstance(p, str) or m.padding_mode != "zeros":
            pad = _explicit_padding(m)
            self.pad = pad if any(pad) else None
            self.pad_mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            p = (0,) * len(k)
        if self.dims == 1:
            k, s, p, d = (1, *k), (1, *s), (0, *p), (1, *d)
        self.k, self.s, self.p, self.d = tuple(k), tuple(s), tuple(p), tuple(d)

    # -- the device model (aihwkit's own classes) -------------------------------------------------------
    def _readout_args(self) -> tuple[float, float, float, float]:
        """native readout's periphery: (q1, out_noise, ADC step or 0, out_bound or 0)."""
        io = self.io
        return (self._q1, float(io.out_noise), _step(io.out_res, io.out_bound) if io.out_res > 0 else 0.0,
                io.out_bound if io.out_bound > 0 else 0.0)

    def _native_readout(self, weights: torch.Tensor) -> bool:
        """Whether the readout of these weights runs in native code (global compensation, one-hot rows)."""
        return (self.compensation is not None and self._one_hot_readout and not self.perfect
                and not self._per_column and _native_for(weights) is not None)

    def _readout_bank(self, bank: _Bank, weights: torch.Tensor, native=None) -> torch.Tensor:
        """The compensation's readout of each tile's forward on its read-out tensor (one-hot rows): [T]
        (global), [T, rows] (per column: the mean over the inputs of each output). `native`: the
        (means, peaks) of the native readout, already computed (fused into the PCM drift pass)."""
        out = None
        if self._one_hot_readout and not self.perfect:
            # one-hot rows: noise management scales by 1, the DAC maps 1 to q1, so the MVM is q1 * W^T
            # exactly; the periphery then runs as usual (the full path for the tiles that clip)
            lib = _native_for(weights) if not self._per_column else None
            if native is not None:
                means, peaks = native
            if lib is not None or native is not None:  # noise, ADC, bound test, mean |.|: one pass per tile
                io = self.io
                if native is None:
                    w = weights.contiguous()
                    means = torch.empty(w.shape[0], dtype=torch.float64)
                    peaks = torch.empty(w.shape[0])
                    lib.readout_many(w.data_ptr(), w.shape[0], w[0].numel(), *self._readout_args(),
                                     int(torch.randint(0, 2**62, ()).item()), means.data_ptr(), peaks.data_ptr())
                vals = torch.clamp(means.float(), min=0.0001)  # GlobalDriftCompensation.readout per tile
                ok = peaks <= io.out_bound if io.out_bound > 0 else torch.ones_like(peaks, dtype=torch.bool)
            else:
                y = weights * self._q1  # = (eye @ W^T) per tile, transposed: [T, rows = outputs, inputs]
                ok = self._finalize_tiles(y, [slice(None)], dim=None)
                vals = torch.clamp(y.abs().mean(2 if self._per_column else (1, 2)), min=0.0001)  # .readout per tile
            if bool(ok.all()):
                return vals
            out = vals
            for i in torch.nonzero(~ok).flatten().tolist():
                out[i] = self._readout_one(weights[i])
            return out
        return torch.stack([self._readout_one(w) for w in weights])

    def _readout_one(self, weights: torch.Tensor) -> torch.Tensor:
        n = weights.shape[1]
        if n not in self.eye:
            self.eye[n] = self.compensation.get_readout_tensor(n)
        return self.compensation.readout(self._tile_mvm(self.eye[n], weights))

    def _batched_model(self) -> bool:
        from aihwkit.inference import PCMLikeNoiseModel
        from aihwkit.inference.converter.conductance import SinglePairConductanceConverter

        nm = self.noise_model
        return type(nm) is PCMLikeNoiseModel and type(nm.g_converter) is SinglePairConductanceConverter

    @staticmethod
    def _slices(bank: _Bank) -> list[slice]:
        per = max(1, BATCH_ELEMENTS // bank.ref[0].numel())
        return [slice(i, i + per) for i in range(0, bank.ref.shape[0], per)]

    def _to_g(self, w: torch.Tensor, ratio: torch.Tensor) -> list[torch.Tensor]:
        conv = self.noise_model.g_converter
        scaled = w * ratio
        return [scaled.clamp(min=0.0, max=conv.g_max) + conv.g_min,
                (-scaled).clamp(min=0.0, max=conv.g_max) + conv.g_min]

    def _ratio(self, w: torch.Tensor) -> torch.Tensor:
        """SinglePairConductanceConverter's scale_ratio of every tile of a stack, [T, 1, 1]."""
        conv = self.noise_model.g_converter
        return (conv.g_max - conv.g_min) / w.abs().amax((1, 2), keepdim=True).clamp(min=1e-7)  # _ZERO_CLIP

    def _from_g(self, g: list[torch.Tensor], ratio: torch.Tensor) -> torch.Tensor:
        conv = self.noise_model.g_converter
        return ((g[0] - conv.g_min) - (g[1] - conv.g_min)) / ratio

    @torch.no_grad()
    def program(self) -> None:
        from ..hardware import pcm

        batched = self._batched_model()
        nm = self.noise_model
        for bank in self.banks:
            if pcm.available(nm, bank.ref):  # aihwkit's PCM maths in one native pass (pcm.py)
                bank.programmed, bank.nu, bank.q = pcm.program(bank.ref, nm)
            elif batched:  # the same element-wise functions aihwkit's apply_programming_noise calls, per tile ratios
                progs, nus = [], []
                for sl in self._slices(bank):
                    ref = bank.ref[sl]
                    ratio = self._ratio(ref)
                    g = self._to_g(ref, ratio)
                    prog = [nm.apply_programming_noise_to_conductance(gi) for gi in g]
                    nus.append([nm.generate_drift_coefficients(gi) for gi in g])
                    progs.append(self._from_g(prog, ratio))
                bank.programmed = progs[0] if len(progs) == 1 else torch.cat(progs)
                bank.nu, bank.q = nus, None
            else:
                pairs = [nm.apply_programming_noise(r) for r in bank.ref]
                bank.programmed = torch.stack([p for p, _ in pairs])
                bank.nu, bank.q = [nu for _, nu in pairs], None
            bank.current = bank.programmed
            bank.alpha = torch.ones(bank.ref.shape[0])
            if self.compensation is not None:
                bank.baseline = self._readout_bank(bank, bank.programmed)
        self._weights = None

    @torch.no_grad()
    def drift(self, seconds: float) -> None:
        from ..hardware import pcm

        batched = self._batched_model()
        nm = self.noise_model
        for bank in self.banks:
            if bank.q is not None and pcm.available(nm, bank.programmed):  # programmed natively
                fused = self._native_readout(bank.programmed)
                bank.current, means, peaks = pcm.drift(bank.programmed, bank.nu, bank.q, nm, seconds, out=bank.buffer,
                                                       readout=self._readout_args() if fused else None)
                bank.buffer = bank.current
                if self.compensation is not None:
                    bank.alpha = bank.baseline / self._readout_bank(bank, bank.current,
                                                                    (means, peaks) if fused else None)
                continue
            if batched:
                parts = []
                for sl, nus in zip(self._slices(bank), bank.nu):
                    prog = bank.programmed[sl]
                    ratio = self._ratio(prog)  # aihwkit converts the programmed weights by their own max
                    g = self._to_g(prog, ratio)
                    parts.append(self._from_g([nm.apply_drift_noise_to_conductance(gi, nu, seconds)
                                               for gi, nu in zip(g, nus)], ratio))
                bank.current = parts[0] if len(parts) == 1 else torch.cat(parts)
            else:
                bank.current = torch.stack([nm.apply_drift_noise(p, nu, seconds)
                                            for p, nu in zip(bank.programmed, bank.nu)])
            if self.compensation is not None:
                bank.alpha = bank.baseline / self._readout_bank(bank, bank.current)  # compensation.apply
        self._weights = None

    # -- the periphery (aihwkit's AnalogMVM.matmul for the torch tile) ------------------------------------
    def _finalize_tiles(self, y: torch.Tensor, parts: list, dim: int | None,
                        extra_std: torch.Tensor | None = None) -> torch.Tensor:
        """Output noise, ADC, clipping, in place on a fresh `y`; returns per part (tile) whether nothing
        clipped (aihwkit's bound test). `parts`: slices of `dim` (dim None: y is [T, ...], one tile per
        row). `extra_std`: the output noise's std per element (the fused conv's DAC error included)."""
        io = self.io
        if extra_std is not None:
            y.addcmul_(_normal_like(y), extra_std)
        elif io.out_noise > 0:
            _normal_(y, io.out_noise)
        if io.out_res > 0:
            step = _step(io.out_res, io.out_bound)
            y.div_(step).round_().mul_(step)
        if io.out_bound <= 0:
            return torch.ones(len(parts) if dim is not None else y.shape[0], dtype=torch.bool)
        if dim is None:
            flat = y.flatten(1)
            peak = torch.maximum(flat.amax(1), flat.amin(1).neg())
        else:
            dims = [i for i in range(y.dim()) if i != dim % y.dim()]
            col = torch.maximum(y.amax(dims), y.amin(dims).neg())  # per output column, no |y| temporary
            size = parts[0].stop - parts[0].start
            if len(parts) == 1:
                peak = col[parts[0]].amax().view(1)
            elif all(p.stop - p.start == size and p.start == i * size for i, p in enumerate(parts)) \
                    and size * len(parts) == col.numel():
                peak = col.view(len(parts), size).amax(1)
            else:
                peak = torch.stack([col[p].amax() for p in parts])
        y.clamp_(-io.out_bound, io.out_bound)
        return peak <= io.out_bound

    def _managed(self, compute, nm: torch.Tensor, parts: list, dim: int, post: torch.Tensor,
                 extra_var: torch.Tensor | None = None, raw=None, groups: int = 1) -> torch.Tensor:
        """AnalogMVM.matmul's iterative bound management around `compute(input scale) -> normalised outputs`,
        for several output tiles at once (`parts`: their slices of `dim`): a tile whose outputs clip
        anywhere in the batch is redone with halved inputs (fresh noise) until it does not, as aihwkit
        does tile by tile. The arithmetic follows aihwkit's order (scale = 1 / nm / reduction), so DAC
        rounding matches bit for bit. `post`: each output's digital factor after the tile (mapping scale
        x drift compensation), broadcast along `dim`. `extra_var`: added output-noise variance.
        `raw()`: the unscaled MVM output (a fused conv), for the one-pass native periphery, where `nm`
        holds one value per group ([N, groups, ...]); the torch path broadcasts it to the outputs."""
        from aihwkit.simulator.parameters.enums import BoundManagementType

        io = self.io
        managed = io.bound_management != BoundManagementType.NONE
        inp_res = io.inp_res
        if inp_res > 0:
            inp_res = (1 / inp_res if inp_res > 1.0 else inp_res) * 2.0 * io.inp_bound

        def final(red: float) -> bool:  # aihwkit stops here whatever the bound test says
            return red > io.max_bm_factor or (inp_res > 0 and red > io.max_bm_res / inp_res)

        std = None if extra_var is None else torch.sqrt(io.out_noise**2 + extra_var)
        lib = _native_for(nm)
        if lib is None and groups > 1 and nm.shape[1] == groups:
            per = post.numel() // groups if post.dim() else 1
            nm = nm.repeat_interleave(per, 1) if per > 1 else nm

        def attempt(red: float) -> tuple[torch.Tensor, torch.Tensor]:
            if lib is None:
                scale = (1.0 / nm) / red
                y = compute(scale)
                ok = self._finalize_tiles(y, parts, dim, std)
                return y.mul_(io.out_scale / scale).mul_(post), ok
            if raw is not None:
                y, prescaled = raw(), 0
            else:
                y, prescaled = compute((1.0 / nm) / red), 1
            return y, self._periphery(lib, y, nm, groups, red, prescaled, dim, std, post, parts)

        red = 1.0
        y, ok = attempt(red)
        if not managed or final(red) or bool(ok.all()):
            return y
        pending = torch.nonzero(~ok).flatten().tolist()
        while pending:
            red *= 2.0
            z, ok = attempt(red)
            stop = final(red)
            for i in [i for i in pending if stop or ok[i]]:
                p = parts[i]
                y.narrow(dim, p.start, p.stop - p.start).copy_(z.narrow(dim, p.start, p.stop - p.start))
            pending = [i for i in pending if not (stop or ok[i])]
        return y

    def _periphery(self, lib, y: torch.Tensor, nm: torch.Tensor, groups: int, red: float, prescaled: int, dim: int,
                   std: torch.Tensor | None, post: torch.Tensor, parts: list) -> torch.Tensor:
        """native/normal.c's periphery on y in place ([N, C, S] along dim 1, or [..., C] along the last dim);
        returns the bound test per part."""
        io = self.io
        c = y.shape[dim]
        n = y.shape[0] if dim == 1 else y.numel() // c
        s = y.numel() // (n * c)
        nm = nm.contiguous()
        sd = (std.reshape(-1) if std is not None else torch.full((1,), float(io.out_noise))).float()
        sd = (sd.expand(c) if sd.numel() == 1 else sd).contiguous()
        pv = post.reshape(-1).float()
        pv = (pv.expand(c) if pv.numel() == 1 else pv).contiguous()
        peak = torch.empty(c)
        step = _step(io.out_res, io.out_bound) if io.out_res > 0 else 0.0
        bound = io.out_bound if io.out_bound > 0 else 0.0
        lib.periphery(y.data_ptr(), n, c, s, nm.data_ptr(), groups, red, prescaled, sd.data_ptr(), pv.data_ptr(),
                      io.out_scale, step, bound, int(torch.randint(0, 2**62, ()).item()), peak.data_ptr())
        if bound <= 0:
            return torch.ones(len(parts), dtype=torch.bool)
        if len(parts) == 1:
            return (peak[parts[0]].amax() <= bound).view(1)
        size = parts[0].stop - parts[0].start
        if size * len(parts) == c and all(p.start == i * size and p.stop - p.start == size for i, p in enumerate(parts)):
            return peak.view(len(parts), size).amax(1) <= bound
        return torch.stack([peak[p].amax() for p in parts]) <= bound

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
                             "use `engine=aihwkit`")
        if io.nm_thres > 0:
            absmax = absmax.clamp(max=io.nm_thres)
        return torch.where(absmax > 0, absmax, torch.ones_like(absmax))

    def _tile_mvm(self, x: torch.Tensor, w: torch.Tensor, ranged: bool = False) -> torch.Tensor:
        """One tile on [N, in] inputs, exactly as AnalogMVM.matmul (noise + bound management).
        `ranged`: a layer input, scaled by the static input range when there is one (the drift read-out is not)."""
        if self.perfect:
            return x @ w.T
        nm = self._input_nm(x, ranged)
        return self._managed(lambda scale: self._dac(x * scale) @ w.T, nm, [slice(0, w.shape[0])], -1,
                             torch.ones(()))

    def _input_nm(self, x: torch.Tensor, ranged: bool = True) -> torch.Tensor:
        """Noise management per input vector: its abs-max, or the static input range (calibrated mapping)."""
        if ranged and self.input_range is not None:
            return x.new_full((*x.shape[:-1], 1), self.input_range)
        return self._nm(x.abs().amax(-1, keepdim=True))

    def _clip_input(self, x: torch.Tensor) -> torch.Tensor:
        """aihwkit's apply_input_range: inputs beyond a static range clip (before the tile)."""
        if self.input_range is None or self.perfect:
            return x
        return x.clamp(-self.input_range, self.input_range)

    # -- effective weights, per (group, input chunk) ---------------------------------------------------------
    def _chunk_tiles(self, group: int, chunk: tuple[int, int]) -> list[_Tile]:
        return [t for t in self.tiles if t.group == group and (t.in_lo, t.in_hi) == chunk]

    def _build(self) -> None:
        """After program / drift: per (group, chunk) the normalised weights of the chunk's tiles stacked by
        rows (conv: as a kernel over the channels the chunk touches, positions outside it zeroed), each
        output's digital factor (tile scale x alpha), the tiles' output slices and sum_j w_oj^2 (the DAC
        term); or, one tile per group, the whole layer as one (grouped) kernel."""
        out_g = self.shape[0] // self.groups
        if self.one_tile_per_group and len(self.banks) == 1:
            bank = self.banks[0]
            idx = torch.tensor([t.index for t in sorted(self.tiles, key=lambda t: t.group)])
            w = bank.current.index_select(0, idx).reshape(self.shape)
            n = bank.ref.shape[0]
            post = (bank.scale.view(n, -1) * bank.alpha.view(n, -1)).index_select(0, idx)  # [T, 1] or [T, rows]
            post = post.reshape(-1) if post.shape[1] == out_g else post.reshape(-1).repeat_interleave(out_g)
            parts = [slice(i * out_g, (i + 1) * out_g) for i in range(self.groups)]
            self._weights = {"all": (w, post, parts, w.pow(2).flatten(1).sum(1))}
            return
        weights = {}
        kk = self.kk
        for g in range(self.groups):
            for chunk in self.in_chunks:
                tiles = self._chunk_tiles(g, chunk)
                w = torch.cat([t.current for t in tiles]) if len(tiles) > 1 else tiles[0].current
                post = torch.cat([(t.scale * t.alpha).expand(t.out_hi - t.out_lo) for t in tiles])
                info = None
                if self.is_conv:
                    in_lo, in_hi = chunk
                    c_lo, c_hi = in_lo // kk, (in_hi + kk - 1) // kk  # the channels this chunk touches
                    lead, tail = in_lo - c_lo * kk, c_hi * kk - in_hi
                    if lead or tail:  # the chunk splits a kernel: zero the positions outside it
                        w = F.pad(w, (lead, tail))
                    w = w.reshape(w.shape[0], c_hi - c_lo, *self.shape[2:]).contiguous()
                    info = (c_lo, c_hi, lead, tail)
                weights[g, chunk] = (w, post, [slice(t.out_lo, t.out_hi) for t in tiles],
                                     w.pow(2).flatten(1).sum(1), info)
        self._weights = weights

    def _ideal_weight(self, programmed: bool) -> torch.Tensor:
        """A perfect periphery: the layer's weights as one tensor (the tiles' current weights times their
        digital factors, or the unprogrammed targets)."""
        out_g = self.shape[0] // self.groups
        flat = torch.zeros(self.shape[0], math.prod(self.shape[1:]))
        for t in self.tiles:
            rows = slice(t.group * out_g + t.out_lo, t.group * out_g + t.out_hi)
            f = (t.scale * t.alpha if programmed else t.scale).reshape(-1, 1)  # per tile or per output column
            flat[rows, t.in_lo:t.in_hi] = (t.current if programmed else t.ref) * f
        return flat.reshape(self.shape)

    # -- the layer forward --------------------------------------------------------------------------------
    def linear(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        if self.perfect:
            return F.linear(x, self._ideal_weight(True), m.bias)
        if self._weights is None:
            self._build()
        out = None
        x = self._clip_input(x)
        for chunk in self.in_chunks:
            w, post, parts = self._weights[0, chunk][:3] if (0, chunk) in self._weights else self._all_as_chunk()
            xc = x[..., chunk[0]:chunk[1]]
            nm = self._input_nm(xc)
            y = self._managed(lambda scale, xc=xc, w=w: self._dac(xc * scale) @ w.T, nm, parts, -1, post)
            out = y if out is None else out.add_(y)
        return out if m.bias is None else out.add_(m.bias)

    def _all_as_chunk(self):
        w, post, parts, _ = self._weights["all"]
        return w.reshape(w.shape[0], -1), post, parts

    def conv_unfolded(self, x: torch.Tensor) -> torch.Tensor:
        """The exact conv periphery: im2col patches through the tiles, as aihwkit's AnalogConv2d."""
        if self.groups != 1:
            raise UsageError("exact mode simulates ungrouped convolutions only", "use exact=False")
        m = self.module
        k, s, p, d = self.k, self.s, self.p, self.d
        cols = F.unfold(x, k, d, p, s).transpose(1, 2)  # [N, L, C*kh*kw]
        y = self._tiles_mvm(cols, self.shape[0]).transpose(1, 2)
        oh = _out_size(x.shape[2], k[0], s[0], p[0], d[0])
        y = y.reshape(x.shape[0], self.shape[0], oh, -1)
        return y if m.bias is None else y + m.bias.view(1, -1, 1, 1)

    def _tiles_mvm(self, x: torch.Tensor, out_features: int, group: int = 0) -> torch.Tensor:
        """Group `group`'s tiles one by one on [..., in / groups] inputs, each exactly as AnalogMVM.matmul."""
        out = None
        x = self._clip_input(x)
        tiles = [t for t in self.tiles if t.group == group]
        for t in tiles:
            y = self._tile_mvm(x[..., t.in_lo:t.in_hi], t.current, ranged=True) * t.scale * t.alpha
            if len(tiles) > 1:
                full = x.new_zeros(*x.shape[:-1], out_features)
                full[..., t.out_lo:t.out_hi] = y
                y = full
            out = y if out is None else out + y
        return out

    def _dac_extra(self, wsq: torch.Tensor, nonzero: torch.Tensor | None) -> torch.Tensor | None:
        """The fused conv's DAC rounding as output-noise variance per output channel ([1, out, 1, 1])."""
        if self.io.inp_res <= 0 or nonzero is None:
            return None
        step = _step(self.io.inp_res, self.io.inp_bound)
        return (wsq * (step**2 / 12.0 * nonzero)).view(1, -1, 1, 1)

    def conv_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's forward (any conv): explicit padding, then the 2-d path (fused, or exact) or the 3-d one."""
        if self.pad is not None:
            x = F.pad(x, self.pad, mode=self.pad_mode)
        if self.dims == 3:
            return self.conv3d(x)
        if self.dims == 1:
            x = x.unsqueeze(2)
        y = self.conv_unfolded(x) if self.exact else self.conv(x)
        return y.squeeze(2) if self.dims == 1 else y

    def conv3d(self, x: torch.Tensor) -> torch.Tensor:
        """A (padded) Conv3d as tiles.GroupedConv runs it: per group, its im2col rows through its tiles (exact)."""
        from ..analog.tiles import im2col3d

        m = self.module
        if self.perfect:
            return F.conv3d(x, self._ideal_weight(True), m.bias, self.s, self.p, self.d, self.groups)
        cg, og = self.shape[1], self.shape[0] // self.groups
        outs = []
        for g in range(self.groups):
            cols, (n, od, oh, ow) = im2col3d(x[:, g * cg:(g + 1) * cg], self.k, self.s, self.d)
            y = self._tiles_mvm(cols, og, g)
            if m.bias is not None:
                y = y.add_(m.bias[g * og:(g + 1) * og])
            outs.append(y.reshape(n, od, oh, ow, og).permute(0, 4, 1, 2, 3))
        return outs[0] if len(outs) == 1 else torch.cat(outs, 1)

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        k, s, p, d = self.k, self.s, self.p, self.d
        if self.perfect:
            return F.conv2d(x, self._ideal_weight(False), m.bias, s, p, d, self.groups)
        if self._weights is None:
            self._build()
        # the fraction of non-zero inputs (zeros convert exactly)
        x = self._clip_input(x)
        lib = _native_for(x)
        if lib is not None:  # count, |x| and the patch maxima of every chunk in native passes
            x = x.contiguous()
            nonzero = (1.0 - lib.count_zeros(x.data_ptr(), x.numel()) / x.numel()) if self.io.inp_res > 0 else None
            pm = self._native_patch_max(lib, x) if self.input_range is None else None
        else:
            nonzero = torch.count_nonzero(x) / x.numel() if self.io.inp_res > 0 else None
        ax = x.abs() if self.input_range is None and lib is None else None
        g = self.groups
        if "all" in self._weights:  # one tile per group: the whole layer in one conv, periphery per group
            w, post, parts, wsq = self._weights["all"]
            cg = x.shape[1] // g
            amax = (lambda: ax) if cg == 1 else (lambda: ax.view(x.shape[0], g, cg, *x.shape[2:]).amax(2))
            nm = self._conv_nm(x, (lambda: pm) if lib is not None else (lambda: _patch_max(amax(), k, s, p, d)),
                               g)  # [N, groups, oh, ow]
            y = self._managed(lambda scale: F.conv2d(x, w, None, s, p, d, g).mul_(scale), nm, parts, 1,
                              post.view(1, -1, 1, 1), self._dac_extra(wsq, nonzero),
                              raw=lambda: F.conv2d(x, w, None, s, p, d, g), groups=g)
            return y if m.bias is None else y.add_(m.bias.view(1, -1, 1, 1))
        cg = x.shape[1] // g
        outs = []
        for gi in range(g):
            acc = None
            for ci, chunk in enumerate(self.in_chunks):
                w, post, parts, wsq, (c_lo, c_hi, lead, tail) = self._weights[gi, chunk]
                xin = x[:, gi * cg + c_lo:gi * cg + c_hi]
                j = gi * len(self.in_chunks) + ci
                nm = self._conv_nm(x, (lambda j=j: pm[:, j:j + 1]) if lib is not None else
                                   (lambda: self._chunk_patch_max(ax[:, gi * cg + c_lo:gi * cg + c_hi], lead, tail,
                                                                  k, s, p, d)), 1)
                y = self._managed(lambda scale, xin=xin, w=w: F.conv2d(xin, w, None, s, p, d).mul_(scale), nm,
                                  parts, 1, post.view(1, -1, 1, 1), self._dac_extra(wsq, nonzero),
                                  raw=lambda xin=xin, w=w: F.conv2d(xin, w, None, s, p, d))
                acc = y if acc is None else acc.add_(y)
            outs.append(acc)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        return out if m.bias is None else out.add_(m.bias.view(1, -1, 1, 1))

    def _conv_nm(self, x: torch.Tensor, patch_max, groups: int) -> torch.Tensor:
        """Noise management per conv patch: the patch abs-max, or the static input range ([N, groups, oh, ow])."""
        if self.input_range is None:
            return self._nm(patch_max())
        k, s, p, d = self.k, self.s, self.p, self.d
        oh, ow = _out_size(x.shape[2], k[0], s[0], p[0], d[0]), _out_size(x.shape[3], k[1], s[1], p[1], d[1])
        return x.new_full((x.shape[0], groups, oh, ow), self.input_range)

    def _patch_parts(self):
        """native patch_absmax's parts, once per layer: (c_lo, c_hi, kernel-position mask, output index) per
        part and the number of outputs. One tile per group: a part per group over its channels; else per
        (group, input chunk) its whole channels, and the first / last channel over the kernel positions the
        chunk holds (as _chunk_patch_max)."""
        if getattr(self, "_parts", None) is not None:
            return self._parts
        k = self.k
        kk = k[0] * k[1]
        cg = self.shape[1]  # input channels per group
        rows: list[tuple[int, int, list[int], int]] = []
        if "all" in self._weights:
            rows = [(gi * cg, (gi + 1) * cg, list(range(kk)), gi) for gi in range(self.groups)]
            count = self.groups
        else:
            count = 0
            for gi in range(self.groups):
                for chunk in self.in_chunks:
                    c_lo, c_hi, lead, tail = self._weights[gi, chunk][4]
                    base, c = gi * cg + c_lo, c_hi - c_lo
                    if lead and tail and c == 1:
                        rows.append((base, base + 1, list(range(lead, kk - tail)), count))
                    else:
                        lo, hi = (1 if lead else 0), c - (1 if tail else 0)
                        if hi > lo:
                            rows.append((base + lo, base + hi, list(range(kk)), count))
                        if lead:
                            rows.append((base, base + 1, list(range(lead, kk)), count))
                        if tail:
                            rows.append((base + c - 1, base + c, list(range(kk - tail)), count))
                    count += 1
        assert all(a[3] <= b[3] for a, b in zip(rows, rows[1:]))  # patch_absmax walks the parts by group
        mask = torch.zeros(len(rows), kk, dtype=torch.uint8)
        for i, r in enumerate(rows):
            mask[i, r[2]] = 1
        self._parts = (torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]), mask.contiguous(),
                       torch.tensor([r[3] for r in rows]), count)
        return self._parts

    def _native_patch_max(self, lib, x: torch.Tensor) -> torch.Tensor:
        """[N, outputs, oh, ow]: every part's patch max of |x| (hardware/native patch_absmax)."""
        k, s, p, d = self.k, self.s, self.p, self.d
        c_lo, c_hi, mask, group, count = self._patch_parts()
        oh, ow = _out_size(x.shape[2], k[0], s[0], p[0], d[0]), _out_size(x.shape[3], k[1], s[1], p[1], d[1])
        last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()  # out in x's layout
        out = torch.empty(x.shape[0], oh, ow, count).permute(0, 3, 1, 2) if last else torch.empty(x.shape[0], count, oh, ow)
        scratch = torch.empty((x.shape[2] + 2 * p[0]) * (x.shape[3] + 2 * p[1]) + oh * ow)
        xs, os_ = torch.tensor(x.stride()), torch.tensor(out.stride())
        lib.patch_absmax(x.data_ptr(), x.shape[0], x.shape[2], x.shape[3], xs.data_ptr(), len(c_lo), c_lo.data_ptr(),
                         c_hi.data_ptr(), mask.data_ptr(), group.data_ptr(), count, k[0], k[1], s[0], s[1], p[0], p[1],
                         d[0], d[1], oh, ow, out.data_ptr(), os_.data_ptr(), scratch.data_ptr())
        return out

    @staticmethod
    def _chunk_patch_max(ax: torch.Tensor, lead: int, tail: int, k, s, p, d) -> torch.Tensor:
        """Patch max of |x| over the chunk's inputs: whole channels by their channel max, the first / last
        channel over the kernel positions the chunk holds ([N, 1, oh, ow])."""
        kk = k[0] * k[1]
        pos = [(i, j) for i in range(k[0]) for j in range(k[1])]
        c = ax.shape[1]
        parts = []
        lo, hi = (1 if lead else 0), c - (1 if tail else 0)
        if lead and tail and c == 1:  # one channel, cut on both sides
            return _patch_max(ax, k, s, p, d, pos[lead:kk - tail])
        if hi > lo:
            full = ax[:, lo:hi]
            parts.append(_patch_max(full.amax(1, keepdim=True) if hi - lo > 1 else full, k, s, p, d))
        if lead:
            parts.append(_patch_max(ax[:, :1], k, s, p, d, pos[lead:]))
        if tail:
            parts.append(_patch_max(ax[:, c - 1:], k, s, p, d, pos[:kk - tail]))
        m = parts[0]
        for q in parts[1:]:
            torch.maximum(m, q, out=m)
        return m


class _FastLinear(nn.Linear):
    def forward(self, x):
        return self._fast.linear(x)


class _FastConv:
    def forward(self, x):
        return self._fast.conv_forward(x)


class _FastConv1d(_FastConv, nn.Conv1d):
    pass


class _FastConv2d(_FastConv, nn.Conv2d):
    pass


class _FastConv3d(_FastConv, nn.Conv3d):
    pass


_FAST_CLASSES = {nn.Linear: _FastLinear, nn.Conv1d: _FastConv1d, nn.Conv2d: _FastConv2d, nn.Conv3d: _FastConv3d}


def _fast_linear(weight: torch.Tensor, bias: torch.Tensor | None, rpu) -> nn.Module:
    """A new linear layer y = x W^T + b on the fast engine's tiles (tiles._linear's counterpart)."""
    from ..analog.tiles import digital_linear

    layer = digital_linear(weight, bias)
    layer.__class__ = _FastLinear
    layer._fast = FastLayer(layer, rpu)
    return layer


def _on_tiles(entry, module: nn.Module, rpu) -> tuple[nn.Module, dict[str, FastLayer]]:
    """One placement entry on the fast engine's tiles, mapped as tiles._replacement maps it on aihwkit's:
    (the module that takes its place, {parameter name of the placement's matrices: its FastLayer})."""
    from ..analog.tiles import AnalogAttention

    if entry.kind in ("linear", "conv1d", "conv2d", "conv3d"):
        module.__class__ = _FAST_CLASSES[type(module)]
        module._fast = FastLayer(module, rpu, getattr(module, "groups", 1))
        return module, {"weight": module._fast}
    if entry.kind == "hf_conv1d":  # GPT-2's Conv1D, y = x @ W + b with W [in, out]: a linear layer with W^T
        new = _fast_linear(module.weight.detach().t(), None if module.bias is None else module.bias.detach(), rpu)
        return new, {"weight": new._fast}
    if entry.kind == "attention":  # the projections on tiles, the attention kernel itself digital
        new = AnalogAttention(module, lambda w, b: _fast_linear(w, b, rpu)).eval()
        names = ("in_proj",) if new.packed else ("q_proj", "k_proj", "v_proj")
        layers = {f"{n}_weight": getattr(new, n)._fast for n in names}
        return new, {**layers, "out_proj.weight": new.out_proj._fast}
    raise UsageError(f"the fast engine has no mapping for layer {entry.name!r} ({entry.type}, added with "
                     "register_layer)", "use `engine=aihwkit`")


class FastModel(nn.Module):
    """A copy of the digital model with the placement's analog layers on the fast engine's tiles."""

    fast_engine = True  # certification.monte_carlo programs and drifts such models with their own program / drift

    def __init__(self, digital: nn.Module, rpu, exact: bool = False, placement=None):
        """`placement` (analog/placement.py, config.json["placement"]): the layers to simulate, read, not
        derived; without one, the default conversion's placement of `digital` (as certification._to_aihwkit)."""
        super().__init__()
        from ..analog.placement import plan
        from ..analog.tiles import _set

        self.model = copy.deepcopy(digital).eval()
        self.placement = placement if placement is not None else plan(self.model)
        self.layers: list[FastLayer] = []
        self.simulated: list[str] = []  # the placement layers on tiles, in placement order
        for entry in self.placement.analog:
            try:
                module = self.model.get_submodule(entry.name) if entry.name else self.model
            except AttributeError:
                raise OperationFailed(f"placement layer {entry.name!r} is not in the model") from None
            if type(module).__name__ != entry.type:
                raise OperationFailed(f"placement layer {entry.name!r} is {entry.type} in config.json but "
                                      f"{type(module).__name__} in the model", "convert the model again")
            new, layers = _on_tiles(entry, module, rpu)
            for param, layer in layers.items():  # the record's tile matrices are the ones built here
                rows, cols = entry.matrices.get(param, [None, None])
                got = layer.shape[0] // layer.groups, math.prod(layer.shape[1:])
                if (rows, cols) != got:
                    raise UsageError(f"{entry.name}: the placement maps a {rows}x{cols} {param} matrix per group, "
                                     f"the layer has {got[0]}x{got[1]}", "re-convert the package (its placement is stale)")
                layer.exact = exact
                self.layers.append(layer)
            if new is not module:
                if entry.name:
                    _set(self.model, entry.name, new)
                else:
                    self.model = new
            self.simulated.append(entry.name)

    @torch.no_grad()
    def program(self) -> None:
        for layer in self.layers:
            layer.program()

    @torch.no_grad()
    def drift(self, seconds: float) -> None:
        for layer in self.layers:
            layer.drift(seconds)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def conversion(self) -> dict[str, Any]:
        """The certificate's conversion block, counted as tiles.conversion counts aihwkit's."""
        digital: dict[str, int] = {}
        for e in self.placement.digital:
            digital[e.type] = digital.get(e.type, 0) + 1
        return {"analog_layers": len(self.simulated), "tiles": sum(len(layer.tiles) for layer in self.layers),
                "analog_weights": sum(self.placement.entry(n).tile_weights for n in self.simulated),
                "digital_modules": digital, "total_params": self.placement.total_params}
