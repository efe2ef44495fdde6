"""The fast engine's tiles: a layer's [out, in] matrix cut as aihwkit's TileModuleArray cuts it, and the
tiles of one shape stacked in a bank (programmed, drifted and read out together)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


def splits(size: int, max_size: int) -> list[tuple[int, int]]:
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



@dataclass
class Bank:
    """Tiles of one layer that share a [rows, cols] shape, stacked ([T, rows, cols])."""

    ref: torch.Tensor  # normalised target weights, max|w| = 1 per tile
    scale: torch.Tensor  # [T] max|w| of each tile: the digital factor its output is multiplied back by
    programmed: torch.Tensor | None = None
    nu: Any = None  # per tile (list) or stacked (list of tensors) drift coefficients; native PCM: [T, rows, cols]
    q: torch.Tensor | None = None  # native PCM: each programmed weight's read-noise factor (hardware/pcm.py)
    buffer: torch.Tensor | None = None  # native PCM: the drifted weights' memory, reused every time point
    current: torch.Tensor | None = None
    baseline: torch.Tensor | None = None  # [T] drift-compensation readout at programming
    alpha: torch.Tensor = field(default_factory=lambda: torch.ones(1))  # [T] drift compensation factors


def _bank_row(name: str) -> property:
    """A tile's row of one of its bank's stacked tensors."""
    return property(lambda tile: getattr(tile.bank, name)[tile.index], doc=f"the tile's row of its bank's {name}")


class Tile:
    """One crossbar: rows out_lo:out_hi, flattened inputs in_lo:in_hi of group `group`'s [out, in] matrix of
    `layer` (its FastLayer, whose effective weights a write invalidates). A view into its bank (reads and
    writes go there)."""

    def __init__(self, layer: Any, group: int, out_lo: int, out_hi: int, in_lo: int, in_hi: int):
        self.layer, self.group = layer, group
        self.out_lo, self.out_hi, self.in_lo, self.in_hi = out_lo, out_hi, in_lo, in_hi
        self.bank: Bank
        self.index = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.out_hi - self.out_lo, self.in_hi - self.in_lo

    scale = _bank_row("scale")
    ref = _bank_row("ref")
    programmed = _bank_row("programmed")

    @property
    def current(self) -> torch.Tensor:
        return self.bank.current[self.index]

    @current.setter
    def current(self, value: torch.Tensor) -> None:
        if self.bank.current is self.bank.programmed:
            self.bank.current = self.bank.current.clone()
        self.bank.current[self.index] = value
        self.layer.effective = None

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
        self.layer.effective = None
