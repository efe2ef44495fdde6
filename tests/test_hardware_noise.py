"""Training noise that matches the hardware: per-channel scale, the PCM polynomial, clipping, the periphery."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import analogai_deploy as ad
from analogai_deploy import package
from analogai_deploy.analog.layers import AnalogConv2d, AnalogLinear, AnalogState
from analogai_deploy.errors import UsageError
from analogai_deploy.hardware import pcm
from analogai_deploy.hardware.noise import HardwareNoise, tile_weights
from analogai_deploy.recovery import hardware_noise, recipe as R


def _linear(hw, sigma=0.1, out=64, inp=256):
    torch.manual_seed(0)
    lin = torch.nn.Linear(inp, out)
    with torch.no_grad():
        lin.weight[0] *= 50.0  # one outlier channel
    layer = AnalogLinear.from_digital(lin, AnalogState(sigma, 1.0))
    layer.analog.hw = hw
    return layer


def _weight_noise_std(layer, draws=50):
    from analogai_deploy.analog.layers import noisy

    w = layer.weight.detach()
    return torch.stack([noisy(w, layer.analog) - w for _ in range(draws)]).std(0)


def test_column_scale_is_per_output_channel_and_tile_scale_is_the_seeds():
    seed = _weight_noise_std(_linear(None))
    tile = _weight_noise_std(_linear(HardwareNoise("tile", "gaussian")))
    column = _weight_noise_std(_linear(HardwareNoise("column", "gaussian")))
    w = _linear(None).weight.detach()
    # the seed and scale=tile: one s = sigma * max|W| for every weight (the outlier row sets it)
    assert float(tile.mean()) == pytest.approx(float(seed.mean()), rel=0.05)
    assert float(tile.mean()) == pytest.approx(0.1 * float(w.abs().max()), rel=0.05)
    # per column: each row's own max|W|, so the ordinary rows get ~50x less noise than the outlier's
    expect = 0.1 * w.abs().amax(1)
    assert torch.allclose(column.mean(1), expect, rtol=0.06)


def test_pcm_model_follows_aihwkits_programming_polynomial():
    from aihwkit.inference import PCMLikeNoiseModel

    assert tuple(PCMLikeNoiseModel().prog_coeff) == pcm.PCM_PROG_COEFF
    layer = _linear(HardwareNoise("column", "pcm"), sigma=0.2)
    std = _weight_noise_std(layer, draws=200)
    w = layer.weight.detach()
    u = (w.abs() / w.abs().amax(1, keepdim=True)).flatten()
    p = lambda v: 0.26348 + 1.9650 * v - 1.1731 * v * v  # noqa: E731
    expect = 0.2 * w.abs().amax(1, keepdim=True) * torch.sqrt(p(u.view_as(w)) ** 2 + p(0) ** 2) / (
        (p(1.0) ** 2 + p(0) ** 2) ** 0.5)
    rel = (std / expect).flatten()
    assert float(rel.mean()) == pytest.approx(1.0, abs=0.03)
    # the noise grows with the conductance: large weights are noisier than small ones in the same row
    small, large = u < 0.1, u > 0.6
    assert std.flatten()[large].mean() / w.abs().amax(1, keepdim=True).mean() > 1.3 * (
        std.flatten()[small].mean() / w.abs().amax(1, keepdim=True).mean())


def test_device_model_is_certifys_pcm_device_at_a_time_after_programming():
    """noise.model=device: the native pass draws what aihwkit's own PCM functions draw (per weight band, at
    each time), the drift widens it with time, and sigma scales the deviation from the device's own."""
    from scipy.stats import ks_2samp

    nm = pcm.pcm_device()
    torch.manual_seed(0)
    w = torch.randn(128, 512)
    u = w / w.abs().amax(1, keepdim=True)
    big, small = u.abs() > 0.5, u.abs() < 0.1
    stds = []
    for t in (1.0, 86400.0, 31536000.0):
        native = pcm.device_deviation(u, t, nm)
        p, nu = nm.apply_programming_noise(u)  # aihwkit's functions, compensated as certify's global readout
        now = nm.apply_drift_noise(p, nu, t)
        ref = now * (p.abs().sum() / now.abs().sum()) - u
        for band in (big, small):
            assert ks_2samp(native[band].numpy(), ref[band].numpy()).pvalue > 1e-3
            assert float(native[band].std()) == pytest.approx(float(ref[band].std()), rel=0.05)
        stds.append(float(native[big].std()))
    assert stds[0] < stds[1] < stds[2]  # drift and read noise grow with log t
    assert stds[1] > 1.2 * stds[0]
    # small conductances drift faster (nu 0.06 at u = 0.1 against 0.049): after the global compensation they
    # shrink, a systematic change the programming polynomial does not have
    band = (u.abs() > 0.05) & (u.abs() < 0.15)
    gain = {t: float(((u + pcm.device_deviation(u, t, nm))[band] * u[band].sign()).mean() / u[band].abs().mean())
            for t in (1.0, 86400.0)}
    assert gain[86400.0] < gain[1.0] - 0.03
    # a layer at the device's own level (c * sigma = 0.0435) draws the device; twice the level, twice the spread
    layer = _linear(HardwareNoise("column", "device", times=(86400.0,)), sigma=pcm.PCM_C_SIGMA)
    d1 = _weight_noise_std(layer, draws=20)
    layer.analog.sigma = 2 * pcm.PCM_C_SIGMA
    d2 = _weight_noise_std(layer, draws=20)
    wmax = layer.weight.detach().abs().amax(1, keepdim=True)
    assert float((d2 / d1).median()) == pytest.approx(2.0, rel=0.05)
    ub = (layer.weight.detach().abs() / wmax) > 0.5
    assert float((d1 / wmax)[ub].mean()) == pytest.approx(stds[1], rel=0.1)
    with pytest.raises(UsageError, match="bad time"):
        R.load("msnat_hw", ["noise.model=device", "noise.times=[1d, soon]"])
    assert "times" not in R.load("msnat_hw").to_dict()["noise"]  # absent at its default: hashes unchanged


def test_clipping_and_the_periphery_keep_gradients_straight_through():
    layer = _linear(HardwareNoise("column", "gaussian", clip="channel_std", clip_value=2.0, out_noise=0.06,
                                  dac_bits=7, adc_bits=9), sigma=0.0)
    x = torch.randn(32, 256, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    w = layer.weight.detach()
    clipped = torch.maximum(torch.minimum(w, 2 * w.std(1, keepdim=True)), -2 * w.std(1, keepdim=True))
    ref = torch.nn.functional.linear(x.detach(), clipped, layer.bias.detach())
    err = (y.detach() - ref)
    assert 0 < float(err.std()) < 0.5 * float(ref.std())  # the periphery perturbs, it does not replace
    layer.analog.hw = HardwareNoise("column", "gaussian", dac_bits=4)
    x = x.detach()
    coarse = float((layer(x) - torch.nn.functional.linear(x, w, layer.bias)).detach().std())
    layer.analog.hw = HardwareNoise("column", "gaussian", dac_bits=10)
    fine = float((layer(x) - torch.nn.functional.linear(x, w, layer.bias)).detach().std())
    assert coarse > 4 * fine  # the DAC grid sets the error
    conv = AnalogConv2d.from_digital(torch.nn.Conv2d(3, 8, 3, padding=1), AnalogState(0.1, 1.0))
    conv.analog.hw = HardwareNoise("column", "pcm", out_noise=0.06, dac_bits=7, adc_bits=9)
    assert conv(torch.randn(2, 3, 8, 8)).shape == (2, 8, 8, 8)


def test_recipe_sections_validate_and_the_seed_recipes_keep_their_hash():
    hw = R.load("msnat_hw")
    assert (hw.noise.scale, hw.noise.model, hw.io.dac_bits, hw.io.adc_bits, hw.io.out_noise) == (
        "column", "pcm", 7, 9, 0.06)
    assert hw.hardware_noise and not R.load("msnat").hardware_noise
    assert "noise" not in R.load("msnat").to_dict()  # the seed's recipe hash is unchanged by the new sections
    with pytest.raises(UsageError, match="noise.scale 'row'"):
        R.load("msnat", ["noise.scale=row"])
    with pytest.raises(UsageError, match="valid keys"):
        R.load("msnat", ["io.adc=8"])
    with pytest.raises(UsageError, match="batched"):
        R.load("msnat_hw", ["training.mode=batched"])


def test_recover_records_the_mapping_and_io_it_trained_for(lenet_pkg, tmp_path, cli):
    out = tmp_path / "hw"
    code, _, err = cli("recover", str(lenet_pkg), "--recipe", "msnat_hw", "-o", str(out), "training.rounds=1",
                       "training.use_FI=false", "noise.clip=channel_std")
    assert code == 0, err
    mapping = package.section(json.loads((out / "config.json").read_text()), "mapping").to_dict()
    assert mapping["weight_scaling"] == "column" and mapping["clip"] == "channel_std"
    assert mapping["input_scaling"] == "none"  # msnat_hw trains without the package's (channel) input scaling
    assert {k: mapping["io"][k] for k in ("dac_bits", "adc_bits", "out_noise")} == {
        "dac_bits": 7, "adc_bits": 9, "out_noise": 0.06}
    assert all(layer.analog.hw is None for layer in ad.load(out).model.modules() if hasattr(layer, "analog"))
    cert = ad.certify(out, repeats=2, times="1d", limit=32, write=False)
    assert cert["mapping"]["source"] == "package" and cert["mapping"]["clip"] == "channel_std"
    assert cert["mapping"]["input_scaling"] == "none"
    assert (cert["device"]["dac_bits"], cert["device"]["adc_bits"], cert["device"]["out_noise"]) == (7, 9, 0.06)


def test_the_recorded_input_scaling_is_the_one_training_used():
    from analogai_deploy.analog.mapping import MappingConfig
    from analogai_deploy.recovery.recipe_noise import NoiseModelConfig, TrainIOConfig

    def recorded(package_scaling, **noise):
        trained = hardware_noise.trained_mapping(NoiseModelConfig(**noise), TrainIOConfig())
        return MappingConfig.from_dict(trained).over({"input_scaling": package_scaling}).input_scaling

    # trained without input scaling: certify must not scale the inputs, whatever the package's mapping says
    assert recorded("channel", scale="column") == "none"
    # trained through the package's input scaling: that mapping's, none included (training then scaled nothing)
    assert recorded("channel", input_scaling="package") == "channel"
    assert recorded("none", input_scaling="package") == "none"


def test_input_scaling_trains_the_layer_certify_programs():
    from analogai_deploy.analog.layers import noisy

    torch.manual_seed(1)
    s = torch.rand(256) * 4 + 0.25
    hw = HardwareNoise("column", "pcm", out_noise=0.0, in_scale=s)
    layer = _linear(hw, sigma=0.0)
    x = torch.randn(8, 256)
    clean = torch.nn.functional.linear(x, layer.weight, layer.bias)
    # noise off: x / s through W * s is the digital layer
    assert torch.allclose(layer(x), clean, atol=1e-4)
    # the tile holds W_:j * s_j: the noise's per-column wmax and PCM shape are those of the scaled weights
    layer.analog.sigma = 0.1
    scaled = layer.weight.detach() * s
    draws = torch.stack([noisy(layer.weight.detach(), layer.analog) - scaled for _ in range(200)])
    std = draws.std(0)
    m = scaled.abs().amax(1, keepdim=True)
    u = scaled.abs() / m
    q = torch.sqrt(pcm.prog_sigma(u) ** 2 + pcm.prog_sigma(0.0) ** 2) / pcm.PROG_NORM
    assert torch.allclose(std, 0.1 * m * q, rtol=0.2)
    layer.analog.hw = dataclasses.replace(hw, out_noise=0.06, dac_bits=7, adc_bits=9)
    layer.analog.sigma = 0.0
    with torch.no_grad():
        y = layer(x)
    clean = clean.detach()
    assert y.shape == clean.shape and 0 < float((y - clean).abs().mean()) < float(clean.abs().mean())


def test_recover_trains_through_the_packages_input_scaling(lenet_pkg, tmp_path):
    pkg = ad.recover(lenet_pkg, "msnat_hw", output=tmp_path / "s", overrides=[
        "training.rounds=1", "training.use_FI=false", "noise.input_scaling=package"])
    rec = pkg.config["training"]["input_scaling"]
    assert rec["layers"] == 4 and rec["spec"] == "digits" and rec["split"] == "train"
    assert pkg.config["recipe"]["resolved"]["noise"]["input_scaling"] == "package"
    assert package.section(pkg.config, "mapping").input_scaling == "channel"  # trained for what certify then runs
    assert "input_scaling" not in R.load("msnat_hw").to_dict()["noise"]  # absent at its default


def test_digital_outliers_train_the_split_certify_programs(lenet_pkg, tmp_path):
    # a Linear layer: the tile part plus the digital part is the layer when the noise is off ...
    def planted(hw, sigma):  # four outlier weights in output channel 0
        torch.manual_seed(0)
        lin = torch.nn.Linear(256, 64)
        with torch.no_grad():
            lin.weight[0, :4] *= 50.0
        out = AnalogLinear.from_digital(lin, AnalogState(sigma, 1.0))
        out.analog.hw = hw
        return out

    layer = planted(HardwareNoise("column", "pcm", outlier_std=2.0), 0.0)
    x = torch.randn(8, 256)
    clean = torch.nn.functional.linear(x, layer.weight, layer.bias)
    assert torch.allclose(layer(x), clean, atol=1e-5)
    tile, digital = tile_weights(layer.weight, layer.analog.hw, outliers=True)
    assert digital is not None and (digital != 0).float().mean() < 0.1 and torch.equal(tile + digital, layer.weight)
    # ... and with it on, the outlier row's noise is set by its clipped max, far below the unsplit one
    layer.analog.sigma = 0.1
    with torch.no_grad():
        noise = torch.stack([layer(x) - clean for _ in range(40)]).std(0)
        whole = planted(HardwareNoise("column", "pcm"), 0.1)
        noise_whole = torch.stack([whole(x) - clean for _ in range(40)]).std(0)
    assert float(noise[:, 0].mean()) < 0.5 * float(noise_whole[:, 0].mean())
    # the gradient reaches every weight: the clipped ones through the digital part
    layer.analog.sigma = 0.0
    layer(x).sum().backward()
    assert torch.allclose(layer.weight.grad, torch.ones(8, 64).T @ x, atol=1e-4)
    with pytest.raises(UsageError, match="outlier_std"):
        R.load("single_noise", ["noise.outliers=digital", "noise.outlier_std=0"])
    # recover records the split, and certify programs it by default (through the input scaling training
    # used: LeNet's uniform-initialised weights alone have none beyond 2.5 std)
    out = tmp_path / "o"
    ad.recover(lenet_pkg, "vanilla", "digits", output=out, overrides=[
        "training.rounds=1", "noise.scale=column", "noise.outliers=digital", "noise.outlier_std=2.5",
        "noise.input_scaling=package"])
    mapping = package.section(json.loads((out / "config.json").read_text()), "mapping").to_dict()
    assert (mapping["outliers"], mapping["outlier_std"]) == ("digital", 2.5)
    cert = ad.certify(out, repeats=1, times="1d", limit=32, write=False, engine="fast")
    assert cert["mapping"]["outliers"] == "digital" and cert["mapping"]["digital_outliers"]["weight_share"] > 0
