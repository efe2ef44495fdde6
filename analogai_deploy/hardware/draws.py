"""Fresh Gaussian draws around a tensor, t + s * z with z ~ N(0, 1), the gradient straight through to t: the
seed's weight noise (s = c * sigma * max|W|), the output noise, and the training noise models' Gaussian draws.

Cost (it runs 4x per MSNAT step): max|W| is one vectorised min/max reduction; on the CPU, W + s * z is one
pass of native/normal.c (~1 ns a number against ~4 ns for torch's normal_ alone); elsewhere (CUDA, or no C
compiler) the standard normals are generated in place into a buffer the layer's state keeps and added by one
fused `addcmul`. The result is the only new tensor (autograd keeps it for the backward pass).
"""
from __future__ import annotations

import torch

from .native import library


def native(*tensors: torch.Tensor):
    """normal.c's library where every tensor is on the CPU in float32 (and it is built), else None."""
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    return library()


def threaded_native(*tensors: torch.Tensor):
    """`native`, its passes split over torch's thread count (over tiles or rows, as torch's ops split work)."""
    lib = native(*tensors)
    if lib is not None:
        lib.set_threads(torch.get_num_threads())
    return lib


def seed() -> int:
    """A seed for one native draw, from torch's default generator: torch.manual_seed reproduces the run."""
    return int(torch.randint(0, 2**62, ()))


def max_abs(t: torch.Tensor) -> torch.Tensor:
    """max|t| as a 0-dim tensor: aminmax is one vectorised pass with no |t| temporary (~4x abs().amax())."""
    lo, hi = torch.aminmax(t)
    return torch.maximum(hi, lo.neg())


def _contiguous_native(t: torch.Tensor):
    return native(t) if t.is_contiguous() else None


def _draw(t: torch.Tensor, scale: torch.Tensor, state, key: str) -> torch.Tensor:
    """t + scale * z, z ~ N(0, 1) fresh; `scale` is 0-dim or one value per row (dim 0) of t. `state` (an
    analog layer's AnalogState, or None) lends its buffers to torch's generator."""
    lib = _contiguous_native(t)
    if lib is None:
        z = state.standard_normal(t, key) if state is not None else torch.randn_like(t)
        return torch.addcmul(t, z, scale.view(-1, *[1] * (t.dim() - 1)) if scale.dim() else scale)
    out = torch.empty_like(t)
    rows = scale.reshape(-1).tolist()
    seeds = torch.randint(0, 2**62, (len(rows),)).tolist()  # from torch's generator: manual_seed reproduces
    src, dst = (t, out) if len(rows) == 1 else (t.reshape(len(rows), -1), out.view(len(rows), -1))
    for i, (s, row_seed) in enumerate(zip(rows, seeds)):
        x, o = (src, dst) if len(rows) == 1 else (src[i], dst[i])
        lib.add_normal(x.data_ptr(), o.data_ptr(), x.numel(), s, row_seed)
    return out


def _draw_rel(t: torch.Tensor, rel: float, state, key: str) -> torch.Tensor:
    """t + (rel * max|t|) * z: on the CPU one native call (the max, then the draws; the same float32 scale
    and the same seed draw as `_draw`, so the same numbers), else max_abs and `_draw`."""
    lib = _contiguous_native(t)
    if lib is None:
        return _draw(t, max_abs(t).mul_(rel), state, key)
    out = torch.empty_like(t)
    lib.add_normal_rel(t.data_ptr(), out.data_ptr(), t.numel(), rel, seed())
    return out


class _StraightThrough(torch.autograd.Function):
    """draw(t, scale, ...) = t + s * z with dL/dt = dL/d(t + s z): one fused pass forward, the identity
    backward; saves nothing. `draw` is _draw (s given) or _draw_rel (s = scale * max|t|)."""

    @staticmethod
    def forward(ctx, t, draw, scale, state, key):
        return draw(t, scale, state, key)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None, None


def add_noise(t: torch.Tensor, scale: torch.Tensor, state=None, key: str = "w") -> torch.Tensor:
    """t + scale * z, z ~ N(0, 1) fresh on every call, the gradient straight through to t (scale is a
    constant: 0-dim, or one value per row of t). `state` lends its buffers to torch's generator."""
    scale = scale.detach()
    if t.requires_grad and torch.is_grad_enabled():
        return _StraightThrough.apply(t, _draw, scale, state, key)
    return _draw(t.detach(), scale, state, key)


def add_relative_noise(t: torch.Tensor, rel: float, state=None, key: str = "w") -> torch.Tensor:
    """add_noise with scale = rel * max|t| (t detached for the max): the plain weight and output noise,
    in one native call per layer where it applies (small layers are dominated by per-call overhead)."""
    if t.requires_grad and torch.is_grad_enabled():
        return _StraightThrough.apply(t, _draw_rel, float(rel), state, key)
    return _draw_rel(t.detach(), float(rel), state, key)
