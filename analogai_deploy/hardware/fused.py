"""The fused training tile: an AnalogLinear's forward under hardware noise with IO (hardware/noise.py) in native
passes, in place of a dozen torch operations per layer and pass.

A Linear layer with IO under the gaussian or pcm model (the text recipes) runs as one `_FusedLinear`: native
passes (hardware/native/normal.c: tile_weights, tile_dac, tile_adc) for the tile's weights with their noise, the
DAC and the output noise + ADC, around one matmul, and a hand-written backward, in place of a dozen torch
operations per layer and pass, each a temporary the size of the weights or the activations (MiniLM: 1.43x ->
1.13x a digital step in one run; BENCHMARKS.md section 2). Its values are the torch path's (bit for bit with the
noise off); its draws come from normal.c's generator, seeded from torch's.
"""
from __future__ import annotations

import os

import torch

from . import pcm
from .draws import native, seed
from .noise import HardwareNoise

#: the PCM polynomial's coefficients as normal.c's tile_weights reads them
_PCM_COEFF = torch.tensor(pcm.PCM_PROG_COEFF, dtype=torch.float32)


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def programmed_tile(lib, w: torch.Tensor, s: torch.Tensor | None, hw: HardwareNoise, csig: float
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(w * s plus this model's programming noise at c * sigma = csig, the periphery's weight scale per row):
    normal.c's tile_weights, w with its output channels on dim 0."""
    w = w.detach().contiguous()
    rows = w.shape[0]
    tile, wm = torch.empty_like(w), torch.empty(rows)
    lib.tile_weights(w.data_ptr(), _ptr(s), rows, w.numel() // rows, hw.scale == "column", hw.model == "pcm",
                     csig, _PCM_COEFF.data_ptr(), pcm.PROG_NORM, seed() if csig > 0 else 0, tile.data_ptr(),
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
        tile, wm = programmed_tile(lib, w, s, hw, csig)
        xq, xmax = torch.empty_like(x2), torch.empty(n)
        lib.tile_dac(x2.data_ptr(), _ptr(s), n, k, hw.dac_bits, xq.data_ptr(), xmax.data_ptr())
        y = torch.mm(xq, tile.t())
        b = None if bias is None else bias.detach().contiguous()
        lib.tile_adc(y.data_ptr(), n, tile.shape[0], xmax.data_ptr(), wm.data_ptr(), _ptr(b), hw.out_noise,
                     hw.adc_bits, hw.out_bound, seed() if hw.out_noise > 0 else 0)
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
    float32, the native library built (ANALOGAI_FUSED_TILE=0 turns it off, for comparison); else None (the
    caller's torch path)."""
    s, w = layer.analog, layer.weight
    hw = s.hw
    if (hw.model not in ("gaussian", "pcm") or (hw.clip != "none" and not hw.step_clip) or hw.outlier_std > 0
            or hw.input_range is not None or not hw.has_io or s.weight_quant is not None):
        return None
    if os.environ.get("ANALOGAI_FUSED_TILE", "1") == "0":
        return None
    lib = native(x, w, *([] if layer.bias is None else [layer.bias]))
    if lib is None:
        return None
    csig = float(s.sigma * (s.c if hw.c is None else hw.c)) if s.sigma > 0 else 0.0
    return _FusedLinear.apply(x, w, layer.bias, hw, csig, lib)
