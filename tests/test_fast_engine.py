"""The fast certify engine against aihwkit's PyTorch tiles: exact where it claims to be, statistically equal overall."""
from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch

import analogai_deploy as ad
from analogai_deploy.certification import CertifyConfig, DeviceConfig, IOSettings, resolve
from analogai_deploy.certification.bench import load, simulate
from analogai_deploy.hardware.devices import rpu_config
from analogai_deploy.certification.fast import FastModel
from analogai_deploy.analog.mapping import LEGACY
from analogai_deploy.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _pair(pkg: Path, io: dict, exact: bool):
    """aihwkit's model and the fast model of one package, the fast tiles loaded with aihwkit's drifted weights."""
    cfg = CertifyConfig(device=DeviceConfig(name="PCM", io=IOSettings(**io)), repeats=1)
    bench = load(pkg, cfg)
    rpu = rpu_config(cfg.device, "torch")
    analog = simulate("aihwkit", bench.digital, rpu).model
    fast = FastModel(bench.digital, rpu, exact=exact)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analog.program_analog_weights()
        analog.drift_analog_weights(86400.0)
    fast.program()
    fast.drift(86400.0)
    tiles = list(analog.analog_tiles())
    ours = [t for layer in fast.layers for t in layer.tiles]
    assert len(tiles) == len(ours)  # the same tile split as aihwkit's TileModuleArray
    for mine, theirs in zip(ours, tiles):
        assert float(mine.scale) == pytest.approx(float(theirs.get_scales().max()), rel=1e-6)
        mine.current = theirs.tile.get_weights().clone()
        mine.alpha = theirs.alpha.clone()
    return analog, fast, bench.data.batches[0][:128]


@pytest.mark.parametrize("io", [{"out_noise": 0.0}, {"out_noise": 0.0, "adc_bits": 5, "tile_size": 64}])
def test_exact_mode_matches_aihwkit_given_the_same_weights(trained_lenet, io):
    # out_noise 0 makes both sides deterministic: DAC, ADC, noise and bound management must then agree
    # to float rounding; tile_size 64 splits every layer over several tiles (and 5 ADC bits make it clip)
    analog, fast, x = _pair(trained_lenet, io, exact=True)
    a, f = analog(x), fast(x)
    assert torch.allclose(a, f, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_fused_mode_is_exact_without_a_dac(trained_lenet):
    # the fused convolution's only approximation is the per-patch DAC grid; without a DAC it is exact
    analog, fast, x = _pair(trained_lenet, {"out_noise": 0.0, "dac_bits": 0}, exact=False)
    a, f = analog(x), fast(x)
    assert torch.allclose(a, f, rtol=1e-4, atol=1e-4 * a.abs().max().item())


@pytest.fixture(scope="module")
def small_resnet(tmp_path_factory) -> Path:
    """bench/models.py's small ResNet on 1x8x8 digits (3x3 convolutions over 16 / 32 / 64 channels)."""
    return ad.convert(f"{ROOT}/bench/models.py:small_resnet", output=tmp_path_factory.mktemp("fast") / "r",
                      num_classes=10, input_shape=[1, 8, 8]).path


def test_fused_chunks_that_split_kernels_are_exact_without_a_dac(small_resnet):
    # tile_size 100: 3x3 convolutions over 16 / 32 / 64 channels are cut mid-kernel (144 -> 2 x 72, 576 -> 6 x 96
    # inputs), so the fused path convolves partial channels and takes patch maxima over partial kernels
    analog, fast, x = _pair(small_resnet, {"out_noise": 0.0, "dac_bits": 0, "tile_size": 100}, exact=False)
    assert max(len(layer.in_chunks) for layer in fast.layers) == 6
    a, f = analog(x), fast(x)
    assert torch.allclose(a, f, rtol=1e-4, atol=1e-4 * a.abs().max().item())


@pytest.mark.parametrize("kernel, stride, padding, dilation, groups, cin, tile_size", [
    (3, 1, 1, 1, 1, 16, 50), (3, 2, 1, 1, 1, 12, 25), (5, 2, 2, 1, 1, 6, 10), (3, 1, 2, 2, 1, 8, 16),
    ((3, 1), (1, 2), (1, 0), 1, 1, 10, 4), (3, 1, 1, 1, 4, 8, 512), (3, 2, 1, 1, 8, 8, 512), (3, 1, 1, 1, 2, 8, 8)])
def test_native_patch_maxima_equal_the_torch_path(kernel, stride, padding, dilation, groups, cin, tile_size):
    """The native noise management (patch_absmax: per chunk, kernels cut mid-way, per group) and the native
    zero count against the torch path (shifted views of |x|) on the same inputs: equal bit for bit."""
    from torch import nn

    from analogai_deploy.hardware.native import library
    from analogai_deploy.certification.fast import patch_max

    lib = library()
    if lib is None:
        pytest.skip("no C compiler")
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, 2 * groups, kernel, stride, padding, dilation, groups=groups)
    rpu = rpu_config(DeviceConfig(name="PCM", io=IOSettings(tile_size=tile_size)), "torch")
    layer = FastModel(nn.Sequential(conv), rpu).layers[0]
    layer.program()
    layer.build_weights()
    x = torch.randn(3, cin, 11, 9).relu()
    x[0, :, 2] = 0.0
    got = layer.native_patch_max(lib, x)
    k, s, p, d = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    ax, cg = x.abs(), cin // groups
    if "all" in layer.effective:
        amax = ax if cg == 1 else ax.view(3, groups, cg, 11, 9).amax(2)
        expect = patch_max(amax, k, s, p, d)
    else:
        expect = torch.cat([layer.chunk_patch_max(ax[:, gi * cg + info[0]:gi * cg + info[1]], info[2], info[3],
                                                   k, s, p, d)
                            for gi in range(groups) for info in [layer.effective[gi, c][4] for c in layer.in_chunks]], 1)
        assert any(layer.effective[0, c][4][2] or layer.effective[0, c][4][3] for c in layer.in_chunks)  # cut kernels
    assert torch.equal(got, expect)
    assert torch.equal(layer.native_patch_max(lib, x.contiguous(memory_format=torch.channels_last)), expect)
    assert lib.count_zeros(x.data_ptr(), x.numel()) == int((x == 0).sum())


@pytest.mark.parametrize("groups, cin, cout, tile_size", [(4, 8, 12, 512), (8, 8, 16, 512), (2, 8, 6, 16)])
def test_grouped_conv_puts_every_group_on_its_own_tiles(groups, cin, cout, tile_size):
    """A grouped (or depthwise) conv = its groups as separate convs, each on its own tiles: same tile split,
    same mapping scales, and given the same programmed tiles the same outputs (deterministic periphery)."""
    from torch import nn

    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, 3, padding=1, groups=groups)
    cg, og = cin // groups, cout // groups
    split = []
    for g in range(groups):
        part = nn.Conv2d(cg, og, 3, padding=1)
        part.load_state_dict({"weight": conv.weight.detach()[g * og:(g + 1) * og],
                              "bias": conv.bias.detach()[g * og:(g + 1) * og]})
        split.append(part)
    cfg = DeviceConfig(name="PCM", io=IOSettings(out_noise=0.0, dac_bits=0, tile_size=tile_size))
    rpu = rpu_config(cfg, "torch")
    whole = FastModel(nn.Sequential(conv), rpu)
    parts = [FastModel(nn.Sequential(s), rpu) for s in split]
    torch.manual_seed(1)
    whole.program()
    whole.drift(86400.0)
    mine = whole.layers[0].tiles
    assert len(mine) == sum(len(p.layers[0].tiles) for p in parts)
    k = 0
    for p in parts:
        p.program()
        for t in p.layers[0].tiles:
            assert (t.shape, t.in_lo, t.in_hi) == (mine[k].shape, mine[k].in_lo, mine[k].in_hi)
            assert float(t.scale) == pytest.approx(float(mine[k].scale), rel=1e-6)
            t.current, t.alpha = mine[k].current.clone(), mine[k].alpha.clone()
            k += 1
    x = torch.randn(5, cin, 9, 9).relu()
    expect = torch.cat([p(x[:, g * cg:(g + 1) * cg]) for g, p in enumerate(parts)], 1)
    torch.testing.assert_close(whole(x), expect, rtol=1e-4, atol=1e-5)


def test_fast_mean_accuracy_agrees_with_aihwkit(trained_lenet):
    """Statistical agreement on LeNet at 1 s / 1 d / 1 y, default PCM and with a 5-bit ADC (which costs ~10 pp at 1 y).

    Tolerance: the two engines draw independent Monte Carlo samples, so their means differ by sampling
    error alone with standard error se = sqrt(sd_a^2 / n + sd_f^2 / n). We require |difference| <= 4 se
    + 0.2 pp (4 se: six comparisons with sd estimated from n = 8, Welch df ~ 14, so sampling alone exceeds
    it in one of them with probability ~0.8%, where 3 se gave ~5.7%; the 0.2 pp floor: one test image
    is 0.37 pp). A real modelling error shows up far outside this: the fast engine without drift
    compensation (checked below) misses by > 10 se at 1 y.
    """
    n = 8
    for io in ({}, {"adc_bits": 5}):
        ref = ad.certify(trained_lenet, repeats=n, times="1s,1d,1y", write=False, seed=0, engine="aihwkit", **io)
        fast = ad.certify(trained_lenet, repeats=n, times="1s,1d,1y", write=False, seed=500, engine="fast", **io)
        assert fast["engine"] == "fast" and ref["engine"] == "aihwkit"
        assert fast["conversion"]["analog_weights"] == ref["conversion"]["analog_weights"]
        for ra, rf in zip(ref["results"], fast["results"]):
            se = math.sqrt((ra["std"] ** 2 + rf["std"] ** 2) / n)
            assert abs(ra["mean"] - rf["mean"]) <= 4 * se + 0.002, (io, ra["time"], ra["mean"], rf["mean"], se)
    # the check has power: dropping drift compensation in the fast engine only is caught at 1 y
    ref = ad.certify(trained_lenet, repeats=n, times="1y", write=False, seed=0, engine="aihwkit", adc_bits=5)
    off = ad.certify(trained_lenet, repeats=n, times="1y", write=False, seed=500, engine="fast", adc_bits=5,
                     drift_compensation=False)
    ra, rf = ref["results"][0], off["results"][0]
    assert abs(ra["mean"] - rf["mean"]) > 4 * math.sqrt((ra["std"] ** 2 + rf["std"] ** 2) / n) + 0.002


@pytest.mark.parametrize("mapping", [{"weight_scaling": "column", "output_scaling": "column", "input_scaling": "channel"},
                                     {"input_range": "calibrated", "adc_bits": 5}], ids=["column", "input_range"])
def test_exact_mode_matches_aihwkit_under_the_mapping(trained_lenet, mapping):
    # per-column scales and drift factors, input scaling and static input ranges: given aihwkit's drifted
    # weights and its drift factors, the fast engine's outputs equal aihwkit's (out_noise 0: deterministic)
    from analogai_deploy.analog.mapping import MappingConfig

    io = {"out_noise": 0.0, **({"adc_bits": mapping.pop("adc_bits")} if "adc_bits" in mapping else {})}
    cfg = resolve(trained_lenet, CertifyConfig(device=DeviceConfig(name="PCM", io=IOSettings(**io)), repeats=1,
                                               mapping=MappingConfig.from_dict({**LEGACY, **mapping}),
                                               engine="aihwkit")).config
    bench = load(trained_lenet, cfg)
    rpu = rpu_config(cfg.device, "torch", cfg.mapping)
    analog = simulate("aihwkit", bench, rpu).model
    fast = simulate("fast", bench, rpu).model
    for layer in fast.layers:
        layer.exact = True
    fast.program()  # its own draws, overwritten below with aihwkit's
    fast.drift(1.0)
    torch.manual_seed(0)
    tiles = list(analog.analog_tiles())
    ours = [(layer, t) for layer in fast.layers for t in layer.tiles]
    assert len(tiles) == len(ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analog.program_analog_weights()
        baselines = [layer.readout_bank(mine.bank, theirs.tile.get_weights()[None])[0]
                     for (layer, mine), theirs in zip(ours, tiles)]
        analog.drift_analog_weights(365 * 86400.0)
    for ((layer, mine), theirs), baseline in zip(zip(ours, tiles), baselines):
        assert torch.allclose(mine.scale.flatten(), theirs.get_scales().flatten(), rtol=1e-6)
        mine.current = theirs.tile.get_weights().clone()
        # the drift factor from the same weights: per column when the compensation is per column
        alpha = baseline / layer.readout_bank(mine.bank, mine.current[None])[0]
        assert torch.allclose(alpha.flatten(), theirs.alpha.flatten(), rtol=1e-5)
        mine.alpha = theirs.alpha.clone()
    x = bench.data.batches[0][:128]
    a, f = analog(x), fast(x)
    assert torch.allclose(a, f, rtol=1e-4, atol=1e-4 * a.abs().max().item())


MAPPINGS = [  # every mapping option on its own, over the old mapping (the package's defaults are checked above)
    {**LEGACY},
    {**LEGACY, "weight_scaling": "column"},
    {**LEGACY, "input_scaling": "channel"},
    {**LEGACY, "weight_scaling": "column", "output_scaling": "column"},
    {**LEGACY, "clip": "channel_std", "clip_value": 2.0},
    {**LEGACY, "input_range": "calibrated", "input_range_k": 2.0},
]


@pytest.mark.parametrize("mapping", MAPPINGS, ids=["tile", "column", "input_scaling", "column_drift", "clip",
                                                   "input_range"])
def test_fast_agrees_with_aihwkit_under_every_mapping_option(trained_lenet, mapping):
    """The same test as above per mapping option, at 1 d and 1 y with a 6-bit ADC (so IO errors matter);
    both engines draw from seeded torch streams, so a pass is reproducible."""
    n = 8
    kw = dict(repeats=n, times="1d,1y", write=False, adc_bits=6, mapping=mapping)
    ref = ad.certify(trained_lenet, seed=0, engine="aihwkit", **kw)
    fast = ad.certify(trained_lenet, seed=500, engine="fast", **kw)
    assert ref["mapping"]["overridden"] == fast["mapping"]["overridden"]
    for ra, rf in zip(ref["results"], fast["results"]):
        se = math.sqrt((ra["std"] ** 2 + rf["std"] ** 2) / n)
        assert abs(ra["mean"] - rf["mean"]) <= 4 * se + 0.002, (mapping, ra["time"], ra["mean"], rf["mean"], se)


def test_small_resnet_runs_on_split_tiles(small_resnet):
    # 3x3x64 convolutions have 576 inputs: two tiles each; shortcut 1x1 convs and BatchNorm stay as in aihwkit
    analog, fast, x = _pair(small_resnet, {"out_noise": 0.0}, exact=True)
    assert max(len(layer.tiles) for layer in fast.layers) == 2
    a, f = analog(x), fast(x)
    assert torch.allclose(a, f, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_cli_engine_fast_writes_the_engine_into_the_certificate(trained_lenet, tmp_path, cli):
    pkg = tmp_path / "p"
    shutil.copytree(trained_lenet, pkg)
    code, out, err = cli("certify", str(pkg), "--engine", "fast", "--repeats", "2", "--times", "1d", "--json")
    assert code == 0, err
    cert = json.loads((pkg / "certificate.json").read_text())
    assert cert["engine"] == "fast" and cert["settings"]["engine"] == "fast"
    assert cert["results"][0]["mean"] > 0.8
    history = json.loads((pkg / "config.json").read_text())["provenance"]["history"]
    assert history[-1]["engine"] == "fast"
    # what a reader sees names the engine that ran, not the torch tiles it did not use
    code, out, err = cli("certify", str(pkg), "--engine", "fast", "--repeats", "2", "--times", "1d")
    assert code == 0 and "Device: PCM (fast engine)." in out and "torch tiles" not in out, out
    assert "Device: PCM (fast engine)." in (pkg / "README.md").read_text()


def test_fast_engine_refuses_what_only_cpp_tiles_simulate(trained_lenet, cli):
    code, _, err = cli("certify", str(trained_lenet), "--engine", "fast", "--n-w", "0.1")
    assert code == 2 and "--engine aihwkit" in err
    code, _, err = cli("certify", str(trained_lenet), "--engine", "fats")
    assert code == 2 and "fast" in err
    with pytest.raises(UsageError):
        ad.certify(trained_lenet, engine="fast", tile="cpp", write=False)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["lenet", "resnet18"])
def test_fast_engine_agrees_with_aihwkit_over_30_repeats(model, trained_lenet, tmp_path):
    """>= 30 repeats per engine: LeNet (trained, accuracy) and torchvision ResNet-18 at 3x32x32 (top-1
    agreement with the digital model, meaningful untrained), default PCM at 1 d and 1 y. Same tolerance
    rule as above (4 se + 0.2 pp), here with n = 30 (Welch df ~ 58)."""
    n = 30
    if model == "lenet":
        pkg, kw = trained_lenet, {}
    else:
        pkg = ad.convert("resnet18", output=tmp_path / "r18", num_classes=10, input_shape=[3, 32, 32]).path
        kw = {"metric": "agreement"}
    ref = ad.certify(pkg, repeats=n, times="1d,1y", write=False, seed=0, engine="aihwkit", **kw)
    fast = ad.certify(pkg, repeats=n, times="1d,1y", write=False, seed=10_000, engine="fast", **kw)
    assert fast["conversion"]["analog_weights"] == ref["conversion"]["analog_weights"]
    for ra, rf in zip(ref["results"], fast["results"]):
        se = math.sqrt((ra["std"] ** 2 + rf["std"] ** 2) / n)
        assert abs(ra["mean"] - rf["mean"]) <= 4 * se + 0.002, (model, ra["time"], ra["mean"], rf["mean"], se)


def test_default_engine_is_fast_where_validated_and_says_why_not(lenet_pkg):
    """No engine named: the fast engine on PCM; aihwkit where the fast engine is not validated (n_w needs the
    C++ tile, ReRAM's noise model, a named tile kind), each certificate saying which ran and why."""
    kw = dict(repeats=1, times="1d", limit=16, write=False)
    cert = ad.certify(lenet_pkg, **kw)
    assert cert["engine"] == cert["settings"]["engine"] == "fast" and cert["engine_reason"].startswith("default:")
    for extra, why in (({"n_w": 0.1}, "n_w"), ({"device": "ReRAM"}, "ReRam"), ({"tile": "torch"}, "--tile torch")):
        cert = ad.certify(lenet_pkg, **kw, **extra)
        assert cert["engine"] == "aihwkit" and why in cert["engine_reason"], (extra, cert["engine_reason"])
    assert ad.certify(lenet_pkg, engine="aihwkit", **kw)["engine_reason"] == "named"


def test_native_passes_give_the_same_numbers_on_any_thread_count():
    """Programming, drift (with its readout) and the periphery split over tiles or rows on torch's threads; each
    tile's stream has its own seed and each row chunk starts at its place in the one stream, so 1 and 3
    threads give the same chip and the same outputs, bit for bit."""
    from torch import nn

    from analogai_deploy.hardware.native import library

    if library() is None:
        pytest.skip("no C compiler")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Flatten(),
                          nn.Linear(16 * 14 * 14, 10))
    rpu = rpu_config(DeviceConfig(name="PCM", io=IOSettings(tile_size=64, adc_bits=6)), "torch")
    x = torch.randn(64, 3, 16, 16)
    outs = []
    for threads in (1, 3):
        torch.set_num_threads(threads)
        fast = FastModel(model, rpu)
        torch.manual_seed(1)
        fast.program()
        fast.drift(86400.0)
        outs.append((fast(x), [b.current.clone() for layer in fast.layers for b in layer.banks]))
    torch.set_num_threads(1)
    assert torch.equal(outs[0][0], outs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1]))
