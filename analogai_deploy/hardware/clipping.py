"""Weight clipping before the tiles: its vocabulary and its one rule, for the training noise's forward clip
(hardware/noise.py), the clip after every optimizer step (recovery/hardware_noise.py) and certify's mapping
(analog/mapping.py clip_weights). Tensor methods only, so the vocabulary imports without torch."""
from __future__ import annotations

from typing import Literal

#: none; fixed (|w| <= value, weight units); layer_std (value std of the whole layer, aihwkit's LAYER_GAUSSIAN);
#: channel_std (value std per output channel, aihwkit-lightning's LAYER_GAUSSIAN_PER_CHANNEL)
Clip = Literal["none", "fixed", "layer_std", "channel_std"]


def rows(w, channel_dim: int):
    """w as [output channels, the rest] (a copy where the output channels are not on dim 0)."""
    return (w.transpose(0, channel_dim) if channel_dim else w).reshape(w.shape[channel_dim], -1)


def channel_view(v, w, channel_dim: int):
    """A per-output-channel vector shaped to broadcast against the weight w."""
    shape = [1] * w.dim()
    shape[channel_dim] = -1
    return v.view(shape)


def clip_bound(w, clip: Clip, value: float, channel_dim: int = 0):
    """The bound |w| is clipped to (`clip` not none): `value` itself (fixed), value std of the whole weight
    (layer_std), or value std of each output channel - a row of w, a column where `channel_dim` is 1 -
    (channel_std), shaped to broadcast against w; in w's dtype, never part of the autograd graph."""
    d = w.detach()
    if clip == "fixed":
        return d.new_tensor(value)
    if clip == "layer_std":
        return value * d.std()
    return channel_view(value * rows(d, channel_dim).std(1), w, channel_dim)


def clamp(w, bound):
    """w clipped to +-bound."""
    return w.minimum(bound).maximum(-bound)
