"""Every layer kind convert makes analog on the fast certify engine: GPT-2's Conv1D, nn.MultiheadAttention's
projections, Conv1d / Conv3d (grouped, string padding, padding modes), mapped onto tiles as the aihwkit
engine maps them (tiles.py) and simulated exactly as the placement record lists them."""
from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import analogai_deploy as ad
from analogai_deploy.certification import DeviceConfig, IOSettings
from analogai_deploy.certification.bench import simulate
from analogai_deploy.hardware.devices import rpu_config
from analogai_deploy.certification.fast import FastModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import hf_models  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class _Cross(nn.Module):
    """Cross attention with separate q / k / v weights (kdim, vdim != embed_dim) and bias_k / bias_v."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, kdim=8, vdim=8, add_bias_kv=True, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        kv = x[..., :8]
        return self.head(self.attn(x, kv, kv, need_weights=False)[0])


def _models():
    from torchvision.models.vision_transformer import VisionTransformer
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=48,
                            num_classes=5)
    nn.init.normal_(vit.heads.head.weight, std=0.5)  # zero-initialised by torchvision
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16)).eval()
    conv1d = nn.Sequential(nn.Conv1d(4, 8, 3, padding="same", padding_mode="reflect"), nn.ReLU(),
                           nn.Conv1d(8, 8, 3, stride=2, padding=1, groups=4), nn.ReLU(),
                           nn.Conv1d(8, 6, 2, dilation=2, padding="valid"))
    conv3d = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(),
                           nn.Conv3d(4, 4, (2, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), groups=2), nn.ReLU(),
                           nn.Conv3d(4, 2, 3, padding="same", padding_mode="replicate"))
    conv2d = nn.Sequential(nn.Conv2d(3, 6, 3, padding="same", padding_mode="circular"), nn.ReLU(),
                           nn.Conv2d(6, 4, 3, padding="valid"))
    return {
        "torchvision_vit": (vit, torch.randn(4, 3, 16, 16), True),
        "mha_cross": (_Cross(), torch.randn(4, 5, 16), True),
        "gpt2": (gpt2, torch.randint(0, 50, (3, 12)), True),
        "conv1d": (conv1d, torch.randn(4, 4, 20), False),  # grouped: the fused conv, exact without a DAC
        "conv3d": (conv3d, torch.randn(2, 2, 4, 6, 6), True),
        "conv2d_padding": (conv2d, torch.randn(2, 3, 9, 9), True),
    }


MODELS = _models()


@pytest.mark.parametrize("name", list(MODELS))
def test_fast_engine_equals_aihwkit_given_the_same_tiles(name):
    """The same placement on both engines: the same tiles, the same mapping scales, and given aihwkit's drifted
    weights and drift factors the same outputs (out_noise 0 makes the periphery deterministic; tile_size 16
    splits layers over several tiles, a 5-bit ADC makes them clip, so bound management runs)."""
    model, x, exact = MODELS[name]
    io = {"out_noise": 0.0, "tile_size": 16, "adc_bits": 5, **({} if exact else {"dac_bits": 0})}
    rpu = rpu_config(DeviceConfig(name="PCM", io=IOSettings(**io)), "torch")
    analog = simulate("aihwkit", model, rpu).model
    fast = FastModel(model, rpu, exact=exact)
    assert fast.simulated == fast.placement.names
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analog.program_analog_weights()
        analog.drift_analog_weights(86400.0)
    fast.program()
    fast.drift(86400.0)
    tiles = list(analog.analog_tiles())
    ours = [t for layer in fast.layers for t in layer.tiles]
    assert len(tiles) == len(ours) > len(fast.placement.analog)  # some layers span several tiles
    for mine, theirs in zip(ours, tiles):
        assert mine.shape == tuple(theirs.tile.get_weights().shape)
        assert float(mine.scale) == pytest.approx(float(theirs.get_scales().max()), rel=1e-6)
        mine.current = theirs.tile.get_weights().clone()
        mine.alpha = theirs.alpha.clone()
    with torch.no_grad():
        a, f = analog(x), fast(x)
    if not isinstance(a, torch.Tensor):
        a, f = a.logits, f.logits
    assert torch.allclose(a, f, rtol=1e-4, atol=1e-4 * a.abs().max().item())
    # and not by accident: another chip's weights give other outputs
    ours[0].current = ours[0].current.flip(0)
    with torch.no_grad():
        g = fast(x)
    g = g if isinstance(g, torch.Tensor) else g.logits
    assert not torch.allclose(a, g, rtol=1e-4, atol=1e-4 * a.abs().max().item())


@pytest.fixture(scope="module")
def packages(tmp_path_factory, tiny_vit_pkg) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fastcov")
    return {
        "gpt2": ad.convert(f"hf:{hf_models.gpt2_lm(root / 'gpt2_src')}", output=root / "gpt2").path,
        "hf_vit": ad.convert(f"hf:{hf_models.vit_classifier(root / 'vit_src')}", output=root / "hf_vit").path,
        "torchvision_vit": tiny_vit_pkg,  # certified with write=False only
    }


def _agree(ref, fast, n, what):
    """The rule of test_fast_engine: independent Monte Carlo means within 4 standard errors + 0.2 pp."""
    for ra, rf in zip(ref["results"], fast["results"]):
        se = math.sqrt((ra["std"] ** 2 + rf["std"] ** 2) / n)
        assert abs(ra["mean"] - rf["mean"]) <= 4 * se + 0.002, (what, ra["time"], ra["mean"], rf["mean"], se)


@pytest.mark.parametrize("name", ["gpt2", "hf_vit", "torchvision_vit"])
def test_fast_engine_certifies_gpt2_and_vit_packages_as_placed(packages, name):
    """`certify --engine fast` simulates exactly the placement (GPT-2's Conv1D, torchvision's attention), counts
    the conversion as the aihwkit engine does, and its numbers are close to aihwkit's (few repeats here; the
    slow test below takes 30)."""
    pkg = packages[name]
    n = 4
    kw = dict(repeats=n, times="1d", write=False, limit=64, **({} if name == "gpt2" else {"metric": "agreement"}))
    ref = ad.certify(pkg, seed=0, engine="aihwkit", **kw)
    fast = ad.certify(pkg, seed=500, engine="fast", **kw)
    planned = ad.load(pkg).placement.names
    assert fast["engine"] == "fast" and fast["placement"]["simulated"] == planned == ref["placement"]["simulated"]
    assert fast["conversion"] == ref["conversion"]
    _agree(ref, fast, n, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "torchvision_vit"])
def test_fast_engine_agrees_with_aihwkit_over_30_repeats_on_transformers(packages, name):
    """>= 30 repeats per engine on a tiny GPT-2 (next-token agreement with the digital model) and a tiny
    torchvision ViT (top-1 agreement), default PCM at 1 d and 1 y; the same tolerance rule (n = 30)."""
    n = 30
    kw = dict(repeats=n, times="1d,1y", write=False, **({} if name == "gpt2" else {"metric": "agreement"}))
    ref = ad.certify(packages[name], seed=0, engine="aihwkit", **kw)
    fast = ad.certify(packages[name], seed=10_000, engine="fast", **kw)
    print(name, [(r["time"], r["mean"], r["std"]) for r in ref["results"]],
          [(r["time"], r["mean"], r["std"]) for r in fast["results"]])
    _agree(ref, fast, n, name)
