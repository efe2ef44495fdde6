"""The package format: round trip, atomic writes, tamper detection, strict configs, data registry."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

import analogai_deploy as ad
from analogai_deploy import package
from analogai_deploy.errors import PackageError, UsageError


def test_round_trip_is_bit_identical(tmp_path):
    torch.manual_seed(3)
    pkg = ad.convert("resnet18", output=tmp_path / "r18", num_classes=10, seed=3)
    loaded = ad.load(tmp_path / "r18")
    original = pkg.model.state_dict()
    for key, value in loaded.model.state_dict().items():
        assert value.equal(original[key]), key
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert loaded.model(x).equal(pkg.model.eval()(x))
    cfg = json.loads((tmp_path / "r18" / "config.json").read_text())
    assert cfg["source"] == {"kind": "torchvision", "name": "resnet18", "kwargs": {"num_classes": 10}}
    assert cfg["provenance"]["versions"]["torch"] and cfg["provenance"]["seed"] == 3
    with safe_open(tmp_path / "r18" / "model.safetensors", "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["analogai.source"]) == cfg["source"]
    card = (tmp_path / "r18" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: analogai-deploy")


def test_same_seed_same_weights(tmp_path):
    a = ad.convert("lenet", output=tmp_path / "a", seed=7)
    b = ad.convert("lenet", output=tmp_path / "b", seed=7)
    assert a.weights_sha256 == b.weights_sha256  # no timestamps in the weights file


def test_tampered_weights_are_refused(lenet_pkg, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(lenet_pkg, bad)
    raw = bytearray((bad / "model.safetensors").read_bytes())
    raw[-3] ^= 0x01  # one bit in the last tensor
    (bad / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(PackageError, match="sha256"):
        ad.load(bad)


@pytest.mark.parametrize("damage", ["truncate", "huge_header", "bad_json", "foreign_weights_name"])
def test_corrupt_packages_are_refused(lenet_pkg, tmp_path, damage):
    bad = tmp_path / "bad"
    shutil.copytree(lenet_pkg, bad)
    weights, config = bad / "model.safetensors", bad / "config.json"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:5])
    elif damage == "huge_header":
        weights.write_bytes((2**40).to_bytes(8, "little") + weights.read_bytes()[8:])
    elif damage == "bad_json":
        config.write_text("{not json")
    else:
        cfg = json.loads(config.read_text())
        cfg["weights"]["file"] = "../elsewhere.safetensors"
        config.write_text(json.dumps(cfg))
    with pytest.raises(PackageError):
        ad.load(bad)


def test_write_replaces_atomically_and_restores_an_interrupted_swap(lenet_pkg, tmp_path):
    dest = tmp_path / "pkg"
    shutil.copytree(lenet_pkg, dest)
    cfg = package.read_config(dest)
    package.write(dest, cfg, files={"notes.txt": b"hello"}, base=dest)
    assert (dest / "notes.txt").read_bytes() == b"hello"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    # a crash between the two renames leaves only the old copy: reading restores it
    (tmp_path / "pkg").rename(tmp_path / ".pkg.old-123")
    assert ad.load(dest).config["weights"] == cfg["weights"]
    with pytest.raises(PackageError):
        package.write(dest, cfg, files={"../escape": b"x"}, base=dest)
    assert not (tmp_path / "escape").exists()


def test_strict_config_names_valid_keys():
    with pytest.raises(UsageError) as err:
        ad.AnalogConfig.from_dict({"sigam": 0.1})
    assert "did you mean: sigma" in err.value.hint and "weight_bits" in err.value.hint
    cfg = ad.AnalogConfig.from_dict({"sigma": "0.2", "keep_first_last": "true", "exclude": "fc,conv1"})
    assert cfg.sigma == 0.2 and cfg.keep_first_last and cfg.exclude == ["fc", "conv1"]
    from analogai_deploy._config import read_section
    from analogai_deploy.errors import PackageError

    assert read_section({"analog": cfg.serialise()}, "analog", ad.AnalogConfig) == cfg
    with pytest.raises(PackageError):
        read_section({"analog": {"_type": "os.system", "_version": 1, "_data": {}}}, "analog", ad.AnalogConfig)
    with pytest.raises(UsageError, match="device_bits"):
        ad.AnalogConfig(weight_bits=4, device_bits=8)


def test_data_registry(tmp_path):
    from analogai_deploy import data

    d = data.load("digits")
    assert (len(d.train), len(d.val), len(d.test)) == (1257, 269, 271)
    assert d.input_shape == [1, 8, 8] and d.num_classes == 10
    big = data.load("digits", input_shape=[3, 32, 32])
    assert big.train[0][0].shape == (3, 32, 32) and big.fingerprint != d.fingerprint
    assert data.load("digits").fingerprint == d.fingerprint  # the split is fixed
    low, high = d.pixel_bounds()
    assert (d.test.tensors[0] >= low - 1e-5).all() and (d.test.tensors[0] <= high + 1e-5).all()
    with pytest.raises(UsageError, match="did you mean: digits"):
        data.load("digts")
    with pytest.raises(UsageError, match="not found"):
        data.load(f"cifar10:{tmp_path}/nope")
    with pytest.raises(UsageError, match="needs a local path"):
        data.load("mnist")
    with pytest.raises(UsageError, match="cannot read cifar10"):
        data.load(f"cifar10:{tmp_path}")  # exists but holds no CIFAR-10 files


@pytest.mark.parametrize("mask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600),
                                                         (0o002, 0o775, 0o664)])
def test_package_modes_follow_the_umask(lenet_pkg, tmp_path, mask, folder_mode, file_mode):
    import os
    import stat

    old = os.umask(mask)
    try:
        pkg = package.load(lenet_pkg)
        package.write(tmp_path / "p", pkg.config, model=pkg.model)  # a fresh package (convert, recover)
        package.write(tmp_path / "p", pkg.config, files={"extra.json": b"{}"}, base=tmp_path / "p")  # certify, export
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "p").stat().st_mode) == folder_mode
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "p").iterdir()}
    assert modes == {name: file_mode for name in ("config.json", "model.safetensors", "README.md", "extra.json")}


def test_the_record_is_the_one_typed_view_of_config_json(lenet_pkg):
    """Package.record says what a package takes and gives; report and placement are the real objects."""
    from analogai_deploy.analog.convert import ConversionReport
    from analogai_deploy.analog.placement import Placement
    from analogai_deploy.tasks import Record

    pkg = ad.load(lenet_pkg)
    rec = pkg.record
    assert rec == Record.of(pkg.config) and not rec.text and rec.input_kind == "image"
    assert rec.input_shape == tuple(pkg.config["input"]["shape"]) and rec.output == "logits"
    assert isinstance(pkg.report, ConversionReport) and isinstance(pkg.placement, Placement)
    with pytest.raises(AttributeError):
        rec.task = "causal-lm"  # frozen: a stage that decides something writes it into config.json instead
    text = Record.of({"task": "causal-lm", "input": {"kind": "text", "seq_len": 16, "names": ["input_ids"]}})
    assert text.text and text.causal_lm and text.output == "tokens"
    assert (text.seq_len, text.input_names) == (16, ("input_ids",))
    encoder = Record.of({"task": "feature-extraction", "input": {"kind": "text"}})
    assert encoder.output == "pooled" and encoder.seq_len == 32 and encoder.input_names == ("input_ids", "attention_mask")


def test_output_refusals_name_the_parameter_and_the_cli_its_flag(lenet_pkg, tmp_path):
    from analogai_deploy.cli.error_messages import flags

    with pytest.raises(UsageError) as err:
        package.check_output(lenet_pkg)  # an existing package, no overwrite
    assert err.value.hint == "pass `overwrite` to replace it, or choose another `output`"
    assert flags(err.value.hint) == "pass --overwrite to replace it, or choose another -o"
