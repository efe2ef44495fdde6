"""What makes the text training path cheap: the fused native training tile (hardware/fused.py fused_linear: the torch
path's values and gradients, its noise statistics, determinism under a seed) and the allocator setting of
CPU training (recovery/cpu.py keep_freed_memory)."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from analogai_deploy.analog.layers import AnalogLinear, AnalogState
from analogai_deploy.hardware import pcm
from analogai_deploy.hardware.fused import programmed_tile
from analogai_deploy.hardware.native import library
from analogai_deploy.hardware.noise import HardwareNoise

native = pytest.mark.skipif(library() is None, reason="no C compiler: the torch path runs")


def _layer(hw, sigma=0.0, bias=True):
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 64, bias=bias)
    with torch.no_grad():
        lin.weight[0] *= 50.0  # one outlier channel
    layer = AnalogLinear.from_digital(lin, AnalogState(sigma, 1.0))
    layer.analog.hw = hw
    return layer


def _run(layer, x, torch_path: bool):
    os.environ["ANALOGAI_FUSED_TILE"] = "0" if torch_path else "1"
    try:
        layer.zero_grad()
        x = x.detach().requires_grad_()
        y = layer(x)
        (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
        return y.detach(), x.grad, layer.weight.grad, None if layer.bias is None else layer.bias.grad, y.grad_fn
    finally:
        del os.environ["ANALOGAI_FUSED_TILE"]


@native
@pytest.mark.parametrize("scale", ["column", "tile"])
@pytest.mark.parametrize("in_scale", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_tile_is_the_torch_path_without_noise(scale, in_scale, bias):
    s = torch.rand(256, generator=torch.Generator().manual_seed(1)) * 4 + 0.25 if in_scale else None
    layer = _layer(HardwareNoise(scale, "pcm", dac_bits=7, adc_bits=9, in_scale=s), bias=bias)
    x = torch.randn(3, 5, 256)
    fused, ref = _run(layer, x, False), _run(layer, x, True)
    assert type(fused[-1]).__name__ == "_FusedLinearBackward"  # the layer took the fused path
    assert torch.equal(fused[0], ref[0])  # the same operations in the same order: the same bits
    for a, b in zip(fused[1:-1], ref[1:-1]):
        if b is not None:
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-6 * float(b.abs().max()))


@native
def test_fused_tile_noise_statistics_and_determinism():
    s = torch.rand(256, generator=torch.Generator().manual_seed(1)) * 4 + 0.25
    hw = HardwareNoise("column", "pcm", out_noise=0.06, in_scale=s)
    layer = _layer(hw, sigma=0.1)
    lib = library()
    w = layer.weight.detach()
    scaled = w * s
    torch.manual_seed(2)
    draws = torch.stack([programmed_tile(lib, w, s, hw, 0.1)[0] - scaled for _ in range(400)])
    m = scaled.abs().amax(1, keepdim=True)
    u = scaled.abs() / m
    expect = 0.1 * m * torch.sqrt(pcm.prog_sigma(u) ** 2 + pcm.prog_sigma(0.0) ** 2) / pcm.PROG_NORM
    ratio = draws.std(0) / expect
    assert abs(float(ratio.mean()) - 1) < 0.01 and float(ratio.std()) < 0.05  # se of a std from 400 draws: 3.5%
    assert abs(float((draws / expect).mean())) < 0.01
    # the output noise: N(0, out_noise^2) in the tile's units (input abs-max x weight abs-max per column)
    layer.analog.sigma = 0.0
    x = torch.randn(400, 256)
    with torch.no_grad():
        clean = torch.nn.functional.linear(x / s, scaled, layer.bias)
        units = (x / s).abs().amax(1, keepdim=True) * scaled.abs().amax(1)
        z = (layer(x) - clean) / units
    assert abs(float(z.std()) - 0.06) < 0.002 and abs(float(z.mean())) < 0.002
    # a seed reproduces every bit; each pass draws afresh
    layer.analog.sigma = 0.1
    torch.manual_seed(3)
    a = _run(layer, x[:8], False)
    torch.manual_seed(3)
    b = _run(layer, x[:8], False)
    assert all(torch.equal(p, q) for p, q in zip(a[:4], b[:4]))
    assert not torch.equal(_run(layer, x[:8], False)[0], a[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_training_keeps_the_memory_it_frees():
    from analogai_deploy.recovery import cpu

    assert cpu.keep_freed_memory()
    with cpu.cpu_threads(1, torch.nn.Linear(2, 2), torch.device("cpu")) as n:
        assert n == 1
