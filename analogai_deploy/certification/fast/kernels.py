"""The fast engine's forward kernels per layer kind: the effective weights per (group, input chunk), the
linear layer, the fused 2-d convolution (patch maxima by shifted strided views or native passes), the
exact im2col convolution and the 3-d convolution."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...errors import UsageError
from .banks import Tile
from ...hardware.draws import threaded_native
from .periphery import quant_step


def out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def patch_max(a: torch.Tensor, k, s, p, d, offsets=None) -> torch.Tensor:
    """The max of `a` (>= 0, [N, C, H, W]) over every conv patch, per channel; zero padding counts, as in
    aihwkit's unfold. `offsets`: the kernel positions (i, j) to include (default all). Shifted strided
    views: same values as F.max_pool2d, which is several times slower on few channels on CPU."""
    ap = F.pad(a, (p[1], p[1], p[0], p[0])) if p[0] or p[1] else a
    oh, ow = out_size(a.shape[2], k[0], s[0], p[0], d[0]), out_size(a.shape[3], k[1], s[1], p[1], d[1])
    m = None
    for i, j in offsets if offsets is not None else ((i, j) for i in range(k[0]) for j in range(k[1])):
        v = ap[:, :, i * d[0]:i * d[0] + s[0] * (oh - 1) + 1:s[0], j * d[1]:j * d[1] + s[1] * (ow - 1) + 1:s[1]]
        if m is None:
            m = v.clone(memory_format=torch.contiguous_format)
        else:
            torch.maximum(m, v, out=m)
    return m



class Kernels:
    """FastLayer's forward: the layer's tiles and banks, geometry and periphery are the layer's."""

    def _chunk_tiles(self, group: int, chunk: tuple[int, int]) -> list[Tile]:
        return [t for t in self.tiles if t.group == group and (t.in_lo, t.in_hi) == chunk]

    def build_weights(self) -> None:
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
            self.effective = {"all": (w, post, parts, w.pow(2).flatten(1).sum(1))}
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
        self.effective = weights

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
        if self.effective is None:
            self.build_weights()
        out = None
        x = self.clip_input(x)
        for chunk in self.in_chunks:
            w, post, parts = self.effective[0, chunk][:3] if (0, chunk) in self.effective else self._all_as_chunk()
            xc = x[..., chunk[0]:chunk[1]]
            nm = self.input_nm_scale(xc)
            y = self.managed(lambda scale, xc=xc, w=w: self.dac(xc * scale) @ w.T, nm, parts, -1, post)
            out = y if out is None else out.add_(y)
        return out if m.bias is None else out.add_(m.bias)

    def _all_as_chunk(self):
        w, post, parts, _ = self.effective["all"]
        return w.reshape(w.shape[0], -1), post, parts

    def conv_unfolded(self, x: torch.Tensor) -> torch.Tensor:
        """The exact conv periphery: im2col patches through the tiles, as aihwkit's AnalogConv2d."""
        if self.groups != 1:
            raise UsageError("exact mode simulates ungrouped convolutions only", "use exact=False")
        m = self.module
        k, s, p, d = self.k, self.s, self.p, self.d
        cols = F.unfold(x, k, d, p, s).transpose(1, 2)  # [N, L, C*kh*kw]
        y = self._tiles_mvm(cols, self.shape[0]).transpose(1, 2)
        oh = out_size(x.shape[2], k[0], s[0], p[0], d[0])
        y = y.reshape(x.shape[0], self.shape[0], oh, -1)
        return y if m.bias is None else y + m.bias.view(1, -1, 1, 1)

    def _tiles_mvm(self, x: torch.Tensor, out_features: int, group: int = 0) -> torch.Tensor:
        """Group `group`'s tiles one by one on [..., in / groups] inputs, each exactly as AnalogMVM.matmul."""
        out = None
        x = self.clip_input(x)
        tiles = [t for t in self.tiles if t.group == group]
        for t in tiles:
            y = self.tile_mvm(x[..., t.in_lo:t.in_hi], t.current, ranged=True) * t.scale * t.alpha
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
        step = quant_step(self.io.inp_res, self.io.inp_bound)
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
        from ...analog.tiles import im2col3d

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
        if self.effective is None:
            self.build_weights()
        # the fraction of non-zero inputs (zeros convert exactly)
        x = self.clip_input(x)
        lib = threaded_native(x)
        if lib is not None:  # count, |x| and the patch maxima of every chunk in native passes
            x = x.contiguous()
            nonzero = (1.0 - lib.count_zeros(x.data_ptr(), x.numel()) / x.numel()) if self.io.inp_res > 0 else None
            pm = self.native_patch_max(lib, x) if self.input_range is None else None
        else:
            nonzero = torch.count_nonzero(x) / x.numel() if self.io.inp_res > 0 else None
        ax = x.abs() if self.input_range is None and lib is None else None
        g = self.groups
        if "all" in self.effective:  # one tile per group: the whole layer in one conv, periphery per group
            w, post, parts, wsq = self.effective["all"]
            cg = x.shape[1] // g
            amax = (lambda: ax) if cg == 1 else (lambda: ax.view(x.shape[0], g, cg, *x.shape[2:]).amax(2))
            nm = self._conv_nm(x, (lambda: pm) if lib is not None else (lambda: patch_max(amax(), k, s, p, d)),
                               g)  # [N, groups, oh, ow]
            y = self.managed(lambda scale: F.conv2d(x, w, None, s, p, d, g).mul_(scale), nm, parts, 1,
                              post.view(1, -1, 1, 1), self._dac_extra(wsq, nonzero),
                              raw=lambda: F.conv2d(x, w, None, s, p, d, g), groups=g)
            return y if m.bias is None else y.add_(m.bias.view(1, -1, 1, 1))
        cg = x.shape[1] // g
        outs = []
        for gi in range(g):
            acc = None
            for ci, chunk in enumerate(self.in_chunks):
                w, post, parts, wsq, (c_lo, c_hi, lead, tail) = self.effective[gi, chunk]
                xin = x[:, gi * cg + c_lo:gi * cg + c_hi]
                j = gi * len(self.in_chunks) + ci
                nm = self._conv_nm(x, (lambda j=j: pm[:, j:j + 1]) if lib is not None else
                                   (lambda: self.chunk_patch_max(ax[:, gi * cg + c_lo:gi * cg + c_hi], lead, tail,
                                                                  k, s, p, d)), 1)
                y = self.managed(lambda scale, xin=xin, w=w: F.conv2d(xin, w, None, s, p, d).mul_(scale), nm,
                                  parts, 1, post.view(1, -1, 1, 1), self._dac_extra(wsq, nonzero),
                                  raw=lambda xin=xin, w=w: F.conv2d(xin, w, None, s, p, d))
                acc = y if acc is None else acc.add_(y)
            outs.append(acc)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
        return out if m.bias is None else out.add_(m.bias.view(1, -1, 1, 1))

    def _conv_nm(self, x: torch.Tensor, patch_max, groups: int) -> torch.Tensor:
        """Noise management per conv patch: the patch abs-max, or the static input range ([N, groups, oh, ow])."""
        if self.input_range is None:
            return self.nm_scale(patch_max())
        k, s, p, d = self.k, self.s, self.p, self.d
        oh, ow = out_size(x.shape[2], k[0], s[0], p[0], d[0]), out_size(x.shape[3], k[1], s[1], p[1], d[1])
        return x.new_full((x.shape[0], groups, oh, ow), self.input_range)

    def _patch_parts(self):
        """native patch_absmax's parts, once per layer: (c_lo, c_hi, kernel-position mask, output index) per
        part and the number of outputs. One tile per group: a part per group over its channels; else per
        (group, input chunk) its whole channels, and the first / last channel over the kernel positions the
        chunk holds (as _chunk_patch_max)."""
        if getattr(self, "_parts", None) is not None:
            return self.parts_cache
        k = self.k
        kk = k[0] * k[1]
        cg = self.shape[1]  # input channels per group
        rows: list[tuple[int, int, list[int], int]] = []
        if "all" in self.effective:
            rows = [(gi * cg, (gi + 1) * cg, list(range(kk)), gi) for gi in range(self.groups)]
            count = self.groups
        else:
            count = 0
            for gi in range(self.groups):
                for chunk in self.in_chunks:
                    c_lo, c_hi, lead, tail = self.effective[gi, chunk][4]
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
        self.parts_cache = (torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]), mask.contiguous(),
                       torch.tensor([r[3] for r in rows]), count)
        return self.parts_cache

    def native_patch_max(self, lib, x: torch.Tensor) -> torch.Tensor:
        """[N, outputs, oh, ow]: every part's patch max of |x| (hardware/native patch_absmax)."""
        k, s, p, d = self.k, self.s, self.p, self.d
        c_lo, c_hi, mask, group, count = self._patch_parts()
        oh, ow = out_size(x.shape[2], k[0], s[0], p[0], d[0]), out_size(x.shape[3], k[1], s[1], p[1], d[1])
        last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()  # out in x's layout
        out = torch.empty(x.shape[0], oh, ow, count).permute(0, 3, 1, 2) if last else torch.empty(x.shape[0], count, oh, ow)
        scratch = torch.empty((x.shape[2] + 2 * p[0]) * (x.shape[3] + 2 * p[1]) + oh * ow)
        xs, os_ = torch.tensor(x.stride()), torch.tensor(out.stride())
        lib.patch_absmax(x.data_ptr(), x.shape[0], x.shape[2], x.shape[3], xs.data_ptr(), len(c_lo), c_lo.data_ptr(),
                         c_hi.data_ptr(), mask.data_ptr(), group.data_ptr(), count, k[0], k[1], s[0], s[1], p[0], p[1],
                         d[0], d[1], oh, ow, out.data_ptr(), os_.data_ptr(), scratch.data_ptr())
        return out

    @staticmethod
    def chunk_patch_max(ax: torch.Tensor, lead: int, tail: int, k, s, p, d) -> torch.Tensor:
        """Patch max of |x| over the chunk's inputs: whole channels by their channel max, the first / last
        channel over the kernel positions the chunk holds ([N, 1, oh, ow])."""
        kk = k[0] * k[1]
        pos = [(i, j) for i in range(k[0]) for j in range(k[1])]
        c = ax.shape[1]
        parts = []
        lo, hi = (1 if lead else 0), c - (1 if tail else 0)
        if lead and tail and c == 1:  # one channel, cut on both sides
            return patch_max(ax, k, s, p, d, pos[lead:kk - tail])
        if hi > lo:
            full = ax[:, lo:hi]
            parts.append(patch_max(full.amax(1, keepdim=True) if hi - lo > 1 else full, k, s, p, d))
        if lead:
            parts.append(patch_max(ax[:, :1], k, s, p, d, pos[lead:]))
        if tail:
            parts.append(patch_max(ax[:, c - 1:], k, s, p, d, pos[:kk - tail]))
        m = parts[0]
        for q in parts[1:]:
            torch.maximum(m, q, out=m)
        return m
