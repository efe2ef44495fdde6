"""Mapping options: the record in config.json, what reaches aihwkit, what certify uses by default and records."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import analogai_deploy as ad
from analogai_deploy.certification import CertifyConfig, DeviceConfig, resolve
from analogai_deploy.certification.bench import load
from analogai_deploy.hardware.devices import rpu_config
from analogai_deploy.analog.mapping import (DEFAULTS, LEGACY, MAPPING_FIELDS, MappingConfig, calibrate,
                                                   clip_weights, install, apply_input_scaling, package_mapping)
from analogai_deploy.errors import UsageError

QUICK = dict(repeats=2, times="1d", limit=64, write=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def pkg(trained_lenet, tmp_path):
    path = tmp_path / "lenet"
    shutil.copytree(trained_lenet, path)
    return path


def test_config_rejects_unknown_keys_and_values_and_merges_over_the_package():
    with pytest.raises(UsageError, match="valid keys"):
        MappingConfig.from_dict({"weight_scale": "column"})
    with pytest.raises(UsageError, match="channel_std"):
        MappingConfig(clip="per_channel")
    with pytest.raises(UsageError):
        MappingConfig(input_scaling_alpha=1.5)
    assert MappingConfig(clip="channel-std").clip == "channel_std"  # the CLI spelling works too
    base = {**DEFAULTS, "clip": "layer_std", "io": {"dac_bits": 8}}
    m = MappingConfig(weight_scaling="tile", io={"adc_bits": 6}).over(base)
    assert (m.weight_scaling, m.clip, m.input_scaling) == ("tile", "layer_std", DEFAULTS["input_scaling"])
    assert (m.io.dac_bits, m.io.adc_bits) == (8, 6)
    assert MappingConfig.from_dict(m.to_dict()) == m  # round trip through config.json


def test_convert_records_the_defaults_and_old_packages_read_as_legacy(lenet_pkg, tmp_path):
    config = json.loads((lenet_pkg / "config.json").read_text())
    assert config["mapping"]["_type"] == "MappingConfig"  # the typed section's envelope
    assert {k: config["mapping"]["_data"][k] for k in MAPPING_FIELDS} == DEFAULTS
    old = dict(config)
    old.pop("mapping")
    assert package_mapping(old).to_dict() == MappingConfig.from_dict(LEGACY).complete().to_dict()


def test_mapping_reaches_the_aihwkit_rpu_config():
    from aihwkit.inference.compensation.drift import GlobalDriftCompensation, PerColumnDriftCompensation
    from aihwkit.simulator.parameters.enums import NoiseManagementType

    dev = DeviceConfig(name="PCM")
    legacy = rpu_config(dev, "torch", MappingConfig.from_dict(LEGACY))
    assert not legacy.mapping.weight_scaling_columnwise and type(legacy.drift_compensation) is GlobalDriftCompensation
    m = rpu_config(dev, "torch", MappingConfig(weight_scaling="column", output_scaling="column",
                                               input_range="calibrated"))
    assert m.mapping.weight_scaling_columnwise and m.mapping.weight_scaling_omega == 1.0
    assert type(m.drift_compensation) is PerColumnDriftCompensation
    assert m.pre_post.input_range.enable and not m.pre_post.input_range.learn_input_range
    assert m.forward.noise_management == NoiseManagementType.NONE


def test_clipping_per_channel_and_the_exactness_of_input_scaling(trained_lenet):
    import copy

    from analogai_deploy.analog.convert import to_digital
    from analogai_deploy.data import load

    model = to_digital(ad.load(trained_lenet).model).eval()
    mod = copy.deepcopy(model)
    frac = clip_weights(mod, MappingConfig(clip="channel_std", clip_value=1.0))
    assert frac and all(0 < f < 0.5 for f in frac.values())  # ~32% of a Gaussian lies beyond 1 std
    layers = dict(model.named_modules())
    for name, clipped in mod.named_modules():
        if name in frac:
            w, c = layers[name].weight.detach(), clipped.weight.detach()
            bound = w.reshape(w.shape[0], -1).std(1)
            assert (c.reshape(c.shape[0], -1).abs().amax(1) <= bound + 1e-6).all()
    # per-channel input scaling is exact in digital arithmetic: W * s on the tile, x / s before it
    x = load("digits", input_shape=[1, 8, 8]).train.tensors[0][:64]
    mod = copy.deepcopy(model)
    cal = calibrate(mod, [x], MappingConfig(input_scaling="channel"), {})
    assert cal.scales and any(float(s.max() / s.min()) > 1.5 for s in cal.scales.values())
    apply_input_scaling(mod, cal)
    handles = install(mod, cal)
    with torch.no_grad():
        assert torch.allclose(mod(x), model(x), rtol=1e-4, atol=1e-4)
    for h in handles:
        h.remove()
    with torch.no_grad():
        assert not torch.allclose(mod(x), model(x), rtol=1e-3, atol=1e-3)  # the scaled weights alone differ


def test_text_calibration_reads_the_real_positions_only():
    """Padded positions are not data: a padding token with huge activations must not set the input scales."""
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 8)
            self.lin = torch.nn.Linear(8, 4)
            with torch.no_grad():
                self.emb.weight[0] = 1000.0  # the padding token

        def forward(self, input_ids, attention_mask):
            return self.lin(self.emb(input_ids))

    torch.manual_seed(0)
    model = Tiny().eval()
    ids = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0]])
    mask = (ids != 0).long()
    m = MappingConfig(input_scaling="channel")
    cal = calibrate(model, [{"input_ids": ids, "attention_mask": mask}], m, {}, [("lin", model.lin)])
    real = model.emb(ids)[mask.bool()].detach().abs().amax(0)
    wmax = model.lin.weight.detach().abs().amax(0)
    a = m.complete().input_scaling_alpha
    assert torch.allclose(cal.scales["lin"], real ** a / wmax ** (1 - a))


def test_certificate_records_the_mapping_its_source_and_overrides(pkg):
    cert = ad.certify(pkg, **QUICK)
    m = cert["mapping"]
    assert {k: m[k] for k in MAPPING_FIELDS if k != "calibration"} == {
        k: v for k, v in DEFAULTS.items() if k != "calibration"}
    assert m["source"] == "package" and m["overridden"] == {}
    assert m["calibrated"]["spec"] == "digits" and m["calibrated"]["split"] == "train"
    assert cert["device"]["weight_scaling_columnwise"] is True
    assert cert["device"]["drift_compensation"] == "GlobalDriftCompensation"
    cert = ad.certify(pkg, mapping={"weight_scaling": "tile", "clip": "layer_std", "clip_value": 2.5}, **QUICK)
    m = cert["mapping"]
    assert m["overridden"] == {"weight_scaling": "tile", "clip": "layer_std", "clip_value": 2.5}
    assert cert["device"]["weight_scaling_columnwise"] is False
    assert 0 < m["clipped_fraction"] < 0.1 and 0 < m["digital_mapped"]["accuracy"] <= 1
    assert cert["settings"]["mapping"]["weight_scaling"] == "tile"


def test_the_package_io_is_the_default_io_and_the_command_line_wins(pkg):
    from analogai_deploy import package

    config = json.loads((pkg / "config.json").read_text())
    config["mapping"]["_data"]["io"] = {"dac_bits": 8, "adc_bits": 8, "out_noise": 0.04}
    package.write(pkg, config, base=pkg)
    cert = ad.certify(pkg, **QUICK)
    assert (cert["device"]["dac_bits"], cert["device"]["adc_bits"], cert["device"]["out_noise"]) == (8, 8, 0.04)
    cert = ad.certify(pkg, dac_bits=6, **QUICK)
    assert (cert["device"]["dac_bits"], cert["device"]["adc_bits"]) == (6, 8)
    # an ideal device or a preset brings its own periphery: the package's IO does not apply there
    assert ad.certify(pkg, device="ideal", **QUICK)["device"]["perfect_io"] is True


def test_an_old_package_without_a_mapping_certifies_as_before(pkg):
    from analogai_deploy import package

    config = json.loads((pkg / "config.json").read_text())
    config.pop("mapping")
    package.write(pkg, config, base=pkg)
    cfg = resolve(pkg, CertifyConfig(repeats=1)).config
    assert cfg.mapping.weight_scaling == "tile" and cfg.mapping.input_scaling == "none"
    bench = load(pkg, cfg)
    assert bench.mapped.calibration is None and "legacy" in bench.mapping_record["source"]


def test_ideal_device_with_the_default_mapping_equals_digital(pkg):
    cert = ad.certify(pkg, device="ideal", **QUICK)
    assert cert.result("1d")["mean"] == pytest.approx(cert["digital"]["accuracy"], abs=1e-9)


def test_cli_exposes_every_option_and_rejects_bad_values(pkg, cli):
    code, out, _ = cli("certify", "--help")
    assert code == 0
    for flag in ("--weight-scaling", "--clip", "--clip-value", "--input-range", "--input-range-k",
                 "--input-scaling", "--input-scaling-alpha", "--output-scaling", "--calibration",
                 "--calibration-samples", "--outliers", "--outlier-std"):
        assert flag in out, flag
    code, _, err = cli("certify", str(pkg), "--weight-scaling", "row")
    assert code == 2 and "column" in err
    code, out, err = cli("certify", str(pkg), "--repeats", "2", "--times", "1d", "--limit", "64",
                         "--weight-scaling", "tile", "mapping.input_scaling=none", "--json")
    assert code == 0, err
    cert = json.loads(out)
    assert cert["mapping"]["overridden"] == {"weight_scaling": "tile", "input_scaling": "none"}
    assert "calibrated" not in cert["mapping"]


def test_command_line_io_over_the_trained_io_is_recorded(pkg):
    from analogai_deploy import package

    config = json.loads((pkg / "config.json").read_text())
    config["mapping"]["_data"]["io"] = {"dac_bits": 7, "adc_bits": 9, "out_noise": 0.06}
    package.write(pkg, config, base=pkg)
    cert = ad.certify(pkg, dac_bits=8, **QUICK)
    assert cert["mapping"]["overridden"] == {"io": {"dac_bits": 8}} and cert["device"]["dac_bits"] == 8


def test_minilm_keeps_its_embeddings_with_the_default_mapping(minilm_pkg):
    # the measurement in small: 8 sentences, one repeat (programming 11M PCM weights costs seconds);
    # the old mapping gives ~0.13 here (the slow test below checks both)
    new = ad.certify(minilm_pkg, repeats=1, times="1d", limit=8, write=False)
    assert new["mapping"]["calibrated"]["spec"].startswith("calibration sentences")
    assert new.result("1d")["mean"] > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["aihwkit", "fast"])
def test_minilm_default_certificate_keeps_cosine_0_85_at_1d(minilm_pkg, engine):
    cert = ad.certify(minilm_pkg, repeats=5, times="1d", write=False, engine=engine)
    assert cert["data"]["n"] == 32 and cert.result("1d")["ci95"][0] >= 0.85, cert.result("1d")
    old = ad.certify(minilm_pkg, repeats=2, times="1d", write=False, engine=engine, mapping=LEGACY)
    assert old.result("1d")["mean"] < 0.3


def test_digital_outliers_sum_back_exactly_and_shrink_the_tiles(trained_lenet):
    from analogai_deploy.analog import outliers

    from analogai_deploy.analog.convert import to_digital

    digital = to_digital(ad.load(trained_lenet).model).eval()
    split = to_digital(ad.load(trained_lenet).model).eval()
    m = MappingConfig(outliers="digital", outlier_std=2.0)
    before = {n: mod.weight.detach().abs().amax(1) for n, mod in split.named_modules()
              if isinstance(mod, torch.nn.Linear)}
    residuals = outliers.split(split, m, outliers.split_layers(split))
    moved = sum(int((r != 0).sum()) for r in residuals.values())
    assert residuals and set(residuals) == set(before)  # Linear layers only, few weights
    assert 0 < moved < 0.1 * sum(r.numel() for r in residuals.values())
    for name, mod in split.named_modules():
        if name in residuals:
            w = mod.weight.detach()
            assert (w.abs().amax(1) <= before[name] + 1e-7).all() and (w.abs().amax(1) < before[name]).any()
    x = torch.randn(16, *json.loads((trained_lenet / "config.json").read_text())["input"]["shape"])
    handles = outliers.install(split, residuals)
    with torch.no_grad():
        assert torch.allclose(split(x), digital(x), atol=1e-5)  # tile part + digital part = the layer
    for h in handles:
        h.remove()
    with torch.no_grad():
        assert not torch.allclose(split(x), digital(x), atol=1e-3)  # without the digital part it is not


@pytest.mark.parametrize("engine", ["aihwkit", "fast"])
def test_digital_outliers_in_certify_both_engines(pkg, engine):
    ideal = ad.certify(pkg, device="ideal", engine=engine, mapping=MappingConfig(outliers="digital", outlier_std=2.0),
                       **QUICK)
    assert ideal.result("1d")["mean"] == pytest.approx(ideal["digital"]["accuracy"], abs=1e-9)  # exact sum
    assert ideal["mapping"]["outliers"] == "digital" and 0 < ideal["mapping"]["digital_outliers"]["weight_share"] < 0.1
    with pytest.raises(UsageError, match="outlier_std"):
        MappingConfig(outlier_std=0)
    with pytest.raises(UsageError, match="digital"):
        MappingConfig(outliers="sparse")


def test_minilm_keeps_more_with_its_outlier_weights_digital(minilm_pkg):
    plain = ad.certify(minilm_pkg, repeats=1, times="1d", limit=8, write=False, engine="fast")
    split = ad.certify(minilm_pkg, repeats=1, times="1d", limit=8, write=False, engine="fast",
                       mapping=MappingConfig(outliers="digital", outlier_std=2.5))
    assert 0.005 < split["mapping"]["digital_outliers"]["weight_share"] < 0.03
    assert split.result("1d")["mean"] > plain.result("1d")["mean"] + 0.02  # 0.948 against 0.904 on 32 sentences
