"""The torch tile's periphery (aihwkit's AnalogMVM.matmul): noise management, DAC, output noise, ADC,
clipping and iterative bound management, in torch or in hardware/native's passes."""
from __future__ import annotations

import math

import torch

from ...errors import UsageError
from ...hardware.draws import threaded_native


def quant_step(res: float, bound: float) -> float:
    """aihwkit's quantisation step: res (or 1 / states when res > 1) times the full range 2 * bound."""
    return (1 / res if res > 1.0 else res) * 2 * bound


def quantize(x: torch.Tensor, res: float, bound: float) -> torch.Tensor:
    """aihwkit's UniformQuantize (deterministic rounding)."""
    step = quant_step(res, bound)
    return torch.round(x / step) * step


def add_normal_(y: torch.Tensor, std: float) -> torch.Tensor:
    """y += std * N(0, 1), in place (hardware/native's generator on CPU float32, else torch's)."""
    from ...hardware.draws import native

    lib = native(y) if y.is_contiguous() else None
    if lib is None:
        return y.add_(torch.randn_like(y).mul_(std))
    lib.add_normal(y.data_ptr(), y.data_ptr(), y.numel(), std, int(torch.randint(0, 2**62, ()).item()))
    return y


def normal_like(y: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(y)
    return add_normal_(z, 1.0)


class Periphery:
    """FastLayer's periphery: the IO parameters are the layer's (`io`, `perfect`, `input_range`)."""

    def finalize_tiles(self, y: torch.Tensor, parts: list, dim: int | None,
                        extra_std: torch.Tensor | None = None) -> torch.Tensor:
        """Output noise, ADC, clipping, in place on a fresh `y`; returns per part (tile) whether nothing
        clipped (aihwkit's bound test). `parts`: slices of `dim` (dim None: y is [T, ...], one tile per
        row). `extra_std`: the output noise's std per element (the fused conv's DAC error included)."""
        io = self.io
        if extra_std is not None:
            y.addcmul_(normal_like(y), extra_std)
        elif io.out_noise > 0:
            add_normal_(y, io.out_noise)
        if io.out_res > 0:
            step = quant_step(io.out_res, io.out_bound)
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

    def managed(self, compute, nm: torch.Tensor, parts: list, dim: int, post: torch.Tensor,
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
        lib = threaded_native(nm)
        if lib is None and groups > 1 and nm.shape[1] == groups:
            per = post.numel() // groups if post.dim() else 1
            nm = nm.repeat_interleave(per, 1) if per > 1 else nm

        def attempt(red: float) -> tuple[torch.Tensor, torch.Tensor]:
            if lib is None:
                scale = (1.0 / nm) / red
                y = compute(scale)
                ok = self.finalize_tiles(y, parts, dim, std)
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
        step = quant_step(io.out_res, io.out_bound) if io.out_res > 0 else 0.0
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

    def dac(self, x: torch.Tensor) -> torch.Tensor:
        io = self.io
        if io.inp_res > 0:
            x = quantize(x, io.inp_res, io.inp_bound)
        bound = io.inp_bound if io.inp_bound > 0 else math.inf
        return x.clamp(-bound, bound)

    def nm_scale(self, absmax: torch.Tensor) -> torch.Tensor:
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

    def tile_mvm(self, x: torch.Tensor, w: torch.Tensor, ranged: bool = False) -> torch.Tensor:
        """One tile on [N, in] inputs, exactly as AnalogMVM.matmul (noise + bound management).
        `ranged`: a layer input, scaled by the static input range when there is one (the drift read-out is not)."""
        if self.perfect:
            return x @ w.T
        nm = self.input_nm_scale(x, ranged)
        return self.managed(lambda scale: self.dac(x * scale) @ w.T, nm, [slice(0, w.shape[0])], -1,
                             torch.ones(()))

    def input_nm_scale(self, x: torch.Tensor, ranged: bool = True) -> torch.Tensor:
        """Noise management per input vector: its abs-max, or the static input range (calibrated mapping)."""
        if ranged and self.input_range is not None:
            return x.new_full((*x.shape[:-1], 1), self.input_range)
        return self.nm_scale(x.abs().amax(-1, keepdim=True))

    def clip_input(self, x: torch.Tensor) -> torch.Tensor:
        """aihwkit's apply_input_range: inputs beyond a static range clip (before the tile)."""
        if self.input_range is None or self.perfect:
            return x
        return x.clamp(-self.input_range, self.input_range)
