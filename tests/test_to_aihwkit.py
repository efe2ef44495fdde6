"""`ad.to_aihwkit`: the chip certify's aihwkit engine simulates, in aihwkit's own hands; the one RPU-config factory."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

import analogai_deploy as ad
from analogai_deploy.certification import CertifyConfig, resolve
from analogai_deploy.certification.bench import load
from analogai_deploy.certification.montecarlo import stream_seed
from analogai_deploy.hardware.devices import DeviceConfig, rpu_config
from analogai_deploy.metrics import half_width, run, score
from analogai_deploy.analog.mapping import MappingConfig
from analogai_deploy.analog.tiles import to_aihwkit as tiles_to_aihwkit
from analogai_deploy.errors import UsageError

DAY = 86400.0
#: every digital part of a mapping at once: input-scaling pre-hooks, outlier forward hooks, static input ranges
HOOKED = MappingConfig(outliers="digital", outlier_std=2.0, input_range="calibrated")


def _own_calls(model, bench, seeds: list[int], stream: bool = False) -> list[float]:
    """aihwkit's own program / drift / forward, scored like certify scores (the seeding is the caller's)."""
    values = []
    for seed in seeds:
        torch.manual_seed(seed)
        model.eval()
        model.program_analog_weights()
        if stream:  # certify's stream for (seed 0, repeat `seed`, 1 d)
            torch.manual_seed(stream_seed(0, seed, DAY))
        model.drift_analog_weights(DAY)
        with torch.no_grad():
            values.append(score(bench.metric, run(model, bench.data), bench.data, bench.reference))
    return values


@pytest.mark.parametrize("mapping", [None, HOOKED], ids=["default", "hooked"])
def test_to_aihwkit_with_aihwkits_own_calls_reproduces_the_certificate(trained_mlp, mapping):
    cert = ad.certify(trained_mlp, repeats=4, times="1d", limit=300, write=False, mapping=mapping, engine="aihwkit")
    row = cert.result("1d")
    model = ad.to_aihwkit(trained_mlp, device="PCM", mapping=mapping)
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    assert hooks >= (3 if mapping is None else 5)  # the mapping's digital parts travel with the model
    bench = load(trained_mlp, resolve(trained_mlp, CertifyConfig.from_dict(cert["settings"])).config)
    # the same seeds as certify: the same numbers, to the bit (PyTorch tiles are seeded)
    assert _own_calls(model, bench, [0, 1], stream=True) == row["values"][:2]
    # a user's own seeds: other draws of the same chip, so the two 95% CIs overlap
    mine = _own_calls(model, bench, [100, 101, 102, 103])
    assert abs(sum(mine) / len(mine) - row["mean"]) <= half_width(row["values"]) + half_width(mine), (mine, row)
    # the device's bare RPU config on the unmapped model (what export --to aihwkit saved before) is another chip
    old, _ = tiles_to_aihwkit(bench.digital, bench.placement, rpu_config(DeviceConfig(), "torch"))
    assert _own_calls(old, bench, [0, 1], stream=True) != row["values"][:2]


@pytest.mark.slow
def test_minilm_to_aihwkit_reproduces_its_certificates_1d_cosine(minilm_dir, tmp_path):
    """The issue's case: the real MiniLM, PCM, the default mapping, aihwkit's own program / drift(1 d) / forward
    (measured: certificate 0.902, 95% CI 0.898-0.906; own seeds 0.905 +- 0.009; the old export path 0.14)."""
    pkg = tmp_path / "minilm"
    ad.convert(f"hf:{minilm_dir}", output=pkg)
    cert = ad.certify(pkg, repeats=5, times="1d", write=False)
    row = cert.result("1d")
    model = ad.to_aihwkit(pkg, device="PCM")
    bench = load(pkg, resolve(pkg, CertifyConfig.from_dict(cert["settings"])).config)
    assert bench.metric == "cosine"
    assert _own_calls(model, bench, [0], stream=True) == row["values"][:1]
    mine = _own_calls(model, bench, [1000, 1001, 1002, 1003, 1004])
    assert abs(sum(mine) / len(mine) - row["mean"]) <= half_width(row["values"]) + half_width(mine), (mine, row)
    assert min(mine) > 0.85


def test_certificate_settings_rebuild_its_chip_and_devices_have_one_name(trained_mlp):
    cert = ad.certify(trained_mlp, device="ReRAM-Wan2022", repeats=2, times="1d", limit=100, write=False)
    assert cert["device"]["name"] == "ReRAM"  # the older export's name, read as the one device table's
    model = ad.to_aihwkit(trained_mlp, config=CertifyConfig.from_dict(cert["settings"]))
    tile = next(model.analog_tiles())
    assert type(tile.rpu_config.noise_model).__name__ == "ReRamWan2022NoiseModel"
    assert tile.rpu_config.mapping.weight_scaling_columnwise  # the package's default mapping: column scales
    with pytest.raises(UsageError, match="unknown device 'SRAM'"):
        ad.to_aihwkit(trained_mlp, device="SRAM")


def test_export_saves_to_aihwkits_model_loadable_with_weights_only(trained_mlp, tmp_path, cli):
    pkg = tmp_path / "mlp"
    shutil.copytree(trained_mlp, pkg)
    code, out, err = cli("export", pkg, "--to", "aihwkit", "--device", "PCM")
    assert code == 0, err
    state = torch.load(pkg / "model.aihwkit.pt", weights_only=True)  # tensors, numbers and strings only
    record = ad.load(pkg).config["export"]["aihwkit"]
    assert record["weights_only"] and record["device"] == "PCM" and record["mapping"]["input_scaling"] == "channel"
    model = ad.to_aihwkit(pkg, device="PCM")
    want = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    for layer in model.analog_layers():  # disturb the tiles, then restore them from the file
        layer.set_weights(torch.zeros_like(layer.get_weights()[0]), layer.get_weights()[1])
    model.load_state_dict(state, load_rpu_config=False, strict_rpu_config_check=False)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())
    assert not record["certified"]
    with pytest.raises(UsageError, match="custom"):
        ad.export(pkg, to="aihwkit", device="custom")


def test_export_of_a_certified_package_is_its_certificates_chip(trained_mlp, tmp_path):
    pkg = tmp_path / "mlp"
    shutil.copytree(trained_mlp, pkg)
    ad.certify(pkg, repeats=2, times="1d", limit=64, dac_bits=5)  # an override the package's mapping lacks
    result = ad.export(pkg, to="aihwkit")
    assert result.record["certified"] and result.record["simulation"]["dac_bits"] == 5 and not result.warnings
    other = ad.export(pkg, to="aihwkit", device="ReRAM")
    assert not other.record["certified"] and "certificate is for PCM" in other.warnings[0]
    assert other.record["simulation"]["dac_bits"] != 5


def test_only_the_factory_builds_rpu_configs():
    """devices.rpu_config is the one place aihwkit RPU configs (or presets) are imported and constructed."""
    root = Path(ad.__file__).parent
    builds = re.compile(r"from aihwkit\.simulator\.(?:configs|presets) import|\w*RPUConfig\(|\w+Preset\(")
    found = {p.relative_to(root).as_posix() for p in root.rglob("*.py") if builds.search(p.read_text(encoding="utf-8"))}
    assert found == {"hardware/devices.py"}, found
