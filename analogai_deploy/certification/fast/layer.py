"""FastLayer: the analog state of one layer on the fast engine's tiles, its device model, periphery and
forward (device.py, periphery.py, kernels.py)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .banks import Bank, Tile, splits
from .device import DeviceState
from .kernels import Kernels
from .periphery import Periphery


class FastLayer(DeviceState, Periphery, Kernels):
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
        self.tiles: list[Tile] = []
        parts: list[torch.Tensor] = []
        for g in range(groups):
            wg = w[g * out_size:(g + 1) * out_size].reshape(out_size, -1)
            for in_lo, in_hi in splits(in_size, rpu.mapping.max_input_size):
                for out_lo, out_hi in splits(out_size, rpu.mapping.max_output_size):
                    self.tiles.append(Tile(self, g, out_lo, out_hi, in_lo, in_hi))
                    parts.append(wg[out_lo:out_hi, in_lo:in_hi])
        self.banks: list[Bank] = []
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
            bank = Bank(stack / wmax.view(len(idx), -1, 1), wmax, alpha=torch.ones(len(idx)))
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
        self.one_hot_readout = type(self.compensation) in (GlobalDriftCompensation, PerColumnDriftCompensation)
        self.per_column = type(self.compensation) is PerColumnDriftCompensation
        self.q1 = float(self.dac(torch.ones(1))[0]) if self.io.inp_res > 0 else 1.0
        self.effective = None  # effective weights per (group, chunk), rebuilt after program / drift
        self.parts_cache = None  # native patch_absmax parts (per layer structure)
        self.exact = False

    def _geometry(self, m: nn.Module) -> None:
        """The conv's kernel, stride, padding and dilation (a Conv1d's in 2-d, height 1), and the explicit
        padding applied before it where tiles.GroupedConv pads explicitly (string padding, a non-zero padding
        mode, every Conv3d: its im2col does not pad)."""
        from ...analog.tiles import explicit_padding

        k, s, p, d = m.kernel_size, m.stride, m.padding, m.dilation
        self.pad, self.pad_mode = None, "constant"
        if self.dims == 3 or isinstance(p, str) or m.padding_mode != "zeros":
            pad = explicit_padding(m)
            self.pad = pad if any(pad) else None
            self.pad_mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            p = (0,) * len(k)
        if self.dims == 1:
            k, s, p, d = (1, *k), (1, *s), (0, *p), (1, *d)
        self.k, self.s, self.p, self.d = tuple(k), tuple(s), tuple(p), tuple(d)
