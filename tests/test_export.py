"""export: model.onnx checked against PyTorch with onnxruntime, analog metadata everywhere, inspect, --to aihwkit."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import analogai_deploy as ad
from analogai_deploy import package
from analogai_deploy.provenance import sha256_file
from analogai_deploy.errors import OperationFailed, UsageError
from analogai_deploy.exporter import metadata as meta_io
from analogai_deploy.exporter import validate

def _digital(path: Path) -> tuple[package.Package, torch.nn.Module]:
    """The package (sha256 checked) and its model with the analog layers back to digital, as export builds it."""
    from analogai_deploy.analog.convert import to_digital

    pkg = package.load(path)
    return pkg, to_digital(pkg.model).eval()


def _copy(src: Path, tmp_path: Path, name: str = "pkg") -> Path:
    dest = tmp_path / name
    shutil.copytree(src, dest)
    return dest


def _ort(path: Path, feeds: dict[str, np.ndarray], optimize: bool = True) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def _check_metadata(pkg_dir: Path, result, config_before: dict) -> None:
    """What export wrote is what the files give back, and it is the package schema."""
    onnx_meta = meta_io.analog_only(meta_io.read_metadata(pkg_dir / "model.onnx"))
    assert onnx_meta == result.metadata
    expected = package.flat_metadata(config_before, None)
    assert {k: onnx_meta[k] for k in expected} == expected
    assert set(onnx_meta) - set(expected) == {"analogai.versions", "analogai.target_device", "analogai.export"}
    assert json.loads(onnx_meta["analogai.versions"])["torch"] == torch.__version__.split("+")[0]
    header = meta_io.read_safetensors_metadata(pkg_dir / "model.safetensors")
    assert meta_io.stale_keys(header, onnx_meta) == []
    for key in meta_io.WEIGHT_KEYS:
        assert header.get(key) == onnx_meta.get(key), key


def test_lenet_round_trip(lenet_pkg, tmp_path):
    pkg_dir = _copy(lenet_pkg, tmp_path)
    before = package.read_config(pkg_dir)
    result = ad.export(pkg_dir)
    check = result.validation.outputs[0]
    assert result.validation.passed and check.name == "logits" and check.max_abs < 1e-4 and check.agreement == 1.0
    assert result.exporter == "torchscript" and result.opset == 17
    _check_metadata(pkg_dir, result, before)

    model = onnx.load(str(pkg_dir / "model.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.opset_import[0].version == 17
    # the package is still valid (weights untouched) and records the export
    loaded = ad.load(pkg_dir)
    record = loaded.config["export"]["onnx"]
    assert record["sha256"] == sha256_file(pkg_dir / "model.onnx")
    assert loaded.config["provenance"]["history"][-1]["stage"] == "export"
    # an independent check at another batch size: onnxruntime == the package's model with noise off
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad(), ad.noise(loaded.model, 0.0, 0.0):
        ref = loaded.model(x).numpy()
    (got,) = _ort(pkg_dir / "model.onnx", {"input": x.numpy()})
    assert got.shape == (5, 10) and np.abs(got - ref).max() < 1e-4


def test_export_uses_the_package_dataset(lenet_pkg, tmp_path):
    pkg_dir = _copy(lenet_pkg, tmp_path)
    config = package.read_config(pkg_dir)
    config["data"] = {"spec": "digits"}
    package.write(pkg_dir, config, base=pkg_dir)
    result = ad.export(pkg_dir, samples=16)
    assert result.validation.inputs.startswith("dataset digits") and result.validation.batch == 16
    assert not result.warnings


def test_broken_graph_is_a_mismatch_and_writes_nothing(lenet_pkg, tmp_path):
    pkg_dir = _copy(lenet_pkg, tmp_path)
    config_before = (pkg_dir / "config.json").read_text()

    def tamper(model: onnx.ModelProto) -> None:  # a "graph rewrite" that changes one weight tensor
        init = next(i for i in model.graph.initializer if len(i.dims) == 4)
        w = onnx.numpy_helper.to_array(init) * 1.5
        init.CopyFrom(onnx.numpy_helper.from_array(w.astype(np.float32), init.name))

    with pytest.raises(OperationFailed, match="onnxruntime does not match PyTorch: FAIL logits") as info:
        ad.export(pkg_dir, graph_pass=tamper)
    assert info.value.exit_code == 1 and info.value.validation_lines[0].startswith("FAIL logits")
    assert not (pkg_dir / "model.onnx").exists()
    assert (pkg_dir / "config.json").read_text() == config_before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind

    # the validator on its own: a tampered graph fails, the untouched one passes
    ad.export(pkg_dir)
    good = onnx.load(str(pkg_dir / "model.onnx"))
    from analogai_deploy.exporter.graph import build

    _, model = _digital(pkg_dir)
    x = (torch.randn(4, 1, 8, 8),)
    graph = build(model, package.read_config(pkg_dir), x)
    ok = validate.compare(good.SerializeToString(), graph.module, x, ["input"], ["logits"], 1e-4, 1e-3)
    tamper(good)
    bad = validate.compare(good.SerializeToString(), graph.module, x, ["input"], ["logits"], 1e-4, 1e-3)
    assert ok.passed and not bad.passed and bad.outputs[0].max_abs > 1e-3
    assert bad.lines()[0].startswith("FAIL logits (4, 10): max abs err")
    with pytest.raises(OperationFailed):
        validate.check(bad)


def test_vit_round_trip(tiny_vit_pkg, tmp_path):
    pkg_dir = _copy(tiny_vit_pkg, tmp_path, "vit")
    before = package.read_config(pkg_dir)
    result = ad.export(pkg_dir)
    assert result.validation.passed and result.validation.outputs[0].shape == [8, 10]
    assert result.exporter == "torchscript" and not result.warnings
    assert result.validation.max_abs < 1e-4
    _check_metadata(pkg_dir, result, before)
    x = torch.randn(3, 3, 32, 32)
    loaded = ad.load(pkg_dir)
    with torch.no_grad():
        ref = loaded.model(x).numpy()  # package default sigma is 0: the clean model
    (got,) = _ort(pkg_dir / "model.onnx", {"input": x.numpy()})
    assert ref.std() > 0.1 and np.abs(got - ref).max() < 1e-4  # real logits, not the zero-init head


def test_minilm_round_trip(minilm_pkg, tmp_path):
    pkg_dir = _copy(minilm_pkg, tmp_path, "minilm")
    before = package.read_config(pkg_dir)
    result = ad.export(pkg_dir)
    check = result.validation.outputs[0]
    assert check.name == "last_hidden_state" and check.shape == [8, 32, 384] and check.passed
    assert result.exporter == "torchscript" and not result.warnings
    assert check.max_abs < 1e-4
    _check_metadata(pkg_dir, result, before)
    model = onnx.load(str(pkg_dir / "model.onnx"), load_external_data=False)
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", "sequence"]

    # a real sentence through the real tokenizer, at another batch size and length
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pkg_dir)
    enc = tok(["analog chips compute in memory", "drift"], return_tensors="pt", padding=True)
    loaded = ad.load(pkg_dir)
    with torch.no_grad():
        ref = loaded.model(**enc).last_hidden_state.numpy()
    (got,) = _ort(pkg_dir / "model.onnx", {k: v.numpy() for k, v in enc.items()})
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4


def test_qat_exports_as_qdq(lenet_pkg, tmp_path):
    from analogai_deploy.analog.convert import noise_off, to_digital
    from analogai_deploy.analog import qat

    pkg_dir = _copy(lenet_pkg, tmp_path)
    config = package.read_config(pkg_dir)
    # the section recover writes (analog/qat.py describe); layer "0" has no calibrated range (per-batch max)
    section = {"w_bits": 4, "a_bits": 4, "layers": {"0": {"act_max": None, "weight_axis": 0},
               "4": {"act_max": 2.0, "weight_axis": 0}, "9": {"act_max": 2.0, "weight_axis": 0},
               "11": {"act_max": 3.0, "weight_axis": 0}}}
    config["quantization"] = section
    package.write(pkg_dir, config, base=pkg_dir)
    result = ad.export(pkg_dir, samples=32)
    assert result.validation.passed and result.quantized_layers == ["0", "11", "4", "9"]
    model = onnx.load(str(pkg_dir / "model.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 8 and ops.count("DequantizeLinear") == 8  # 4 weights + 4 inputs
    assert json.loads(meta_io.read_metadata(pkg_dir / "model.onnx")["analogai.quantization"])["w_bits"] == 4

    # onnxruntime reproduces the QAT model of analog/qat.py (not only the exporter's own quantizers):
    # exactly with graph optimizations off; its integer QDQ kernels re-round, so there only predictions
    x = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    (q,) = _ort(pkg_dir / "model.onnx", {"input": x.numpy()}, optimize=False)
    (q_opt,) = _ort(pkg_dir / "model.onnx", {"input": x.numpy()})
    qat_model = ad.load(pkg_dir).model
    if not qat.is_attached(qat_model):
        qat.restore(qat_model, qat.QuantRecord.from_dict(section))
    with torch.no_grad(), noise_off(qat_model):
        ref = qat_model(x).numpy()
    assert np.abs(q - ref).max() < 1e-4
    assert (q_opt.argmax(1) == ref.argmax(1)).mean() >= 0.9
    qat.detach(qat_model)
    with torch.no_grad():
        float_out = to_digital(qat_model)(x).numpy()
    assert np.abs(q - float_out).max() > 1e-2  # quantization really is in the graph


def test_qat_wide_bits_and_attention(tiny_vit_pkg, tmp_path):
    """12-bit weights (beyond int8 QDQ) become Round/Clip ops; attention weights are quantized too."""
    pkg_dir = _copy(tiny_vit_pkg, tmp_path, "vit")
    config = package.read_config(pkg_dir)
    from analogai_deploy.analog.convert import analog_layers

    names = [n for n, _ in analog_layers(ad.load(pkg_dir).model)]
    assert any(n.endswith("self_attention") for n in names)
    config["quantization"] = {"w_bits": 12, "a_bits": 8,
                              "layers": {n: {"act_max": 4.0, "weight_axis": 0} for n in names}}
    package.write(pkg_dir, config, base=pkg_dir)
    result = ad.export(pkg_dir)
    assert result.validation.passed and len(result.quantized_layers) == len(names)
    assert any("w_bits=12 > 8" in w for w in result.warnings)
    ops = [n.op_type for n in onnx.load(str(pkg_dir / "model.onnx")).graph.node]
    assert "Round" in ops and ops.count("QuantizeLinear") == len(names) - 2  # inputs; attention has none


def test_bad_quantization_section(lenet_pkg, tmp_path):
    pkg_dir = _copy(lenet_pkg, tmp_path)
    config = package.read_config(pkg_dir)
    config["quantization"] = {"w_bits": 8, "a_bits": 8, "layers": {"nope": {}}}
    package.write(pkg_dir, config, base=pkg_dir)
    with pytest.raises(OperationFailed, match="'nope'"):
        ad.export(pkg_dir)


def test_cli_export_and_inspect(lenet_pkg, tmp_path, cli):
    pkg_dir = _copy(lenet_pkg, tmp_path)
    code, out, err = cli("export", pkg_dir)
    assert code == 0, err
    assert "PASS logits (8, 10): max abs err" in out and "wrote" in out

    code, out, err = cli("export", pkg_dir, "--json", "--opset", "18")
    assert code == 0, err
    data = json.loads(out)
    assert data["validation"]["passed"] and data["record"]["opset"] == 18
    assert onnx.load(str(pkg_dir / "model.onnx")).opset_import[0].version == 18

    code, out, err = cli("inspect", pkg_dir / "model.onnx", "--json")
    assert code == 0, err
    meta = json.loads(out)
    assert meta["analogai.source"]["name"] == "lenet" and meta["analogai.target_device"] == "PCM"
    assert meta["analogai.export"]["opset"] == 18

    code, out, err = cli("inspect", pkg_dir / "model.safetensors")
    assert code == 0, err
    assert "from: builtin lenet" in out and "analogai.analog =" in out


def test_cli_errors(lenet_pkg, tmp_path, cli):
    assert cli("export", tmp_path / "missing")[0] == 2
    code, _, err = cli("export", lenet_pkg, "--to", "onx")
    assert code == 2 and "did you mean: onnx" in err
    assert cli("export", lenet_pkg, "--opset", "9")[0] == 2
    (tmp_path / "notes.txt").write_text("hi")
    code, _, err = cli("inspect", tmp_path / "notes.txt")
    assert code == 2 and ".onnx" in err
    (tmp_path / "model.onnx").write_bytes(b"\x00not a model" * 10)
    code, _, err = cli("inspect", tmp_path / "model.onnx")
    assert code == 1 and "not a readable ONNX model" in err
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    code, _, err = cli("inspect", tmp_path / "model.safetensors")
    assert code == 1 and "corrupt or oversized" in err


def test_export_to_aihwkit(mlp_pkg, tmp_path, cli):
    pkg_dir = _copy(mlp_pkg, tmp_path)
    code, out, err = cli("export", pkg_dir, "--to", "aihwkit")
    assert code == 0, err
    assert "wrote" in out and (pkg_dir / "model.aihwkit.pt").exists()
    record = package.read_config(pkg_dir)["export"]["aihwkit"]
    assert record["device"] == "PCM" and record["analog_layers"] == 3 and record["weights_only"]

    # load it the documented way (tests/test_to_aihwkit.py checks it is certify's chip)
    loaded = ad.load(pkg_dir)
    assert record["placement_sha256"] == loaded.placement.sha256 and record["simulated"] == loaded.placement.names
    analog = ad.to_aihwkit(pkg_dir, device="PCM")
    state = torch.load(pkg_dir / "model.aihwkit.pt", weights_only=True)
    analog.load_state_dict(state, load_rpu_config=False, strict_rpu_config_check=False)
    layers = list(analog.named_analog_layers())
    assert len(layers) == 3
    for _, layer in layers:
        assert type(next(layer.analog_tiles()).rpu_config.noise_model).__name__ == "PCMLikeNoiseModel"
    with pytest.raises(UsageError, match="unknown device 'SRAM'"):
        ad.export(pkg_dir, to="aihwkit", device="SRAM")


def test_certified_package_carries_its_certificate(lenet_pkg, tmp_path, cli):
    pkg_dir = _copy(lenet_pkg, tmp_path)
    config = package.read_config(pkg_dir)
    certificate = {"device": {"name": "PCM"}, "metric": "accuracy", "digital": {"accuracy": 0.97},
                   "results": [{"time": "1s", "mean": 0.96}, {"time": "1y", "mean": 0.93}],
                   "verdict": {"passed": True, "rule": "normalised >= 0.95 at 1y"},
                   "weights_sha256": config["weights"]["sha256"]}
    package.write(pkg_dir, config, files={"certificate.json": json.dumps(certificate).encode()}, base=pkg_dir)
    result = ad.export(pkg_dir, device="ReRAM-CMO")  # the certified device wins over the one asked for, and says so
    assert result.metadata["analogai.target_device"] == "PCM"
    assert any("records the device the package was made for, PCM, not ReRAM-CMO" in w for w in result.warnings)
    summary = json.loads(result.metadata["analogai.certificate"])
    assert summary["verdict"] is True and summary["results"] == {"1s": 0.96, "1y": 0.93}
    code, out, err = cli("inspect", pkg_dir / "model.onnx")
    assert code == 0, err
    assert "certified on PCM: PASS" in out
    ad.load(pkg_dir)  # the certificate still matches the untouched weights


STOCHASTIC_FACTORY = '''
import torch
from torch import nn


class Jitter(nn.Module):
    """Noise at inference too (as in Monte Carlo dropout): no ONNX runtime can reproduce its draws."""

    def forward(self, x):
        return x + torch.randn_like(x)


def noisy_mlp(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), Jitter(), nn.ReLU(), nn.Linear(32, num_classes))


noisy_mlp.input_shape = [1, 8, 8]
'''


def test_cli_mismatch_exits_1_and_leaves_no_file(tmp_path, cli):
    factory = tmp_path / "stochastic.py"
    factory.write_text(STOCHASTIC_FACTORY)
    pkg_dir = tmp_path / "noisy"
    ad.convert(f"{factory}:noisy_mlp", output=pkg_dir, num_classes=10)
    before = sorted(p.name for p in pkg_dir.iterdir())
    code, out, err = cli("export", pkg_dir)
    assert code == 1
    assert "FAIL logits (8, 10): max abs err" in err and "onnxruntime does not match PyTorch" in err
    assert out == "" and sorted(p.name for p in pkg_dir.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_dynamo_exporter_fallback_path(lenet_pkg, capsys):
    """The torch.export-based exporter (used when tracing fails) gives a graph that passes the same check."""
    from analogai_deploy.exporter.graph import build, to_onnx

    pkg, model = _digital(lenet_pkg)
    x = torch.randn(2, 1, 8, 8)
    graph = build(model, pkg.config, (x,))
    raw, exporter, failures = to_onnx(graph, (x,), 18, exporters=("dynamo",))
    assert exporter == "dynamo" and failures == []
    assert capsys.readouterr().out == ""  # nothing on stdout: --json output stays parseable
    xs = (torch.randn(6, 1, 8, 8),)
    result = validate.compare(raw, graph.module, xs, graph.input_names, graph.output_names, None, 1e-3)
    assert result.passed and result.batch == 6


def test_inspect_verifies_the_header_and_the_sha256(lenet_pkg, tmp_path, cli):
    import struct

    pkg_dir = _copy(lenet_pkg, tmp_path)
    code, out, err = cli("inspect", pkg_dir / "model.safetensors", "--json")
    assert code == 0, err
    data = json.loads(out)
    checks = data.pop("verified")
    assert checks[0].startswith("safetensors header: 18 tensors") and checks[1] == "sha256 matches config.json"
    assert data == meta_io.decoded(meta_io.analog_only(meta_io.read_metadata(lenet_pkg / "model.safetensors")))
    code, out, _ = cli("inspect", pkg_dir)  # the package folder: weights, certificate binding, then the header
    assert code == 0 and "ok: model.safetensors matches the sha256 in config.json" in out

    raw = (lenet_pkg / "model.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    cases = {
        "data byte flipped": raw[:-5] + bytes([raw[-5] ^ 0x01]) + raw[-4:],
        "header byte flipped": raw.replace(b'"data_offsets"', b'"eata_offsets"', 1),
        "tensor data cut off": raw[: 8 + n],
    }
    for what, data in cases.items():
        (pkg_dir / "model.safetensors").write_bytes(data)
        code, _, err = cli("inspect", pkg_dir / "model.safetensors")
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 1 and len(errors) == 1, (what, err)
        if what == "data byte flipped":
            assert "does not match the sha256" in err and "a byte changed" in err
        elif what == "header byte flipped":
            assert "corrupt safetensors header" in err and "'eata_offsets'" in err
        else:
            assert "truncated" in err
        # outside a package the structure is still checked; a flipped data byte can only be warned about
        alone = tmp_path / "alone" / "model.safetensors"
        alone.parent.mkdir(exist_ok=True)
        alone.write_bytes(data)
        code, _, err = cli("inspect", alone)
        assert (code == 0 and "cannot be checked" in err) if what == "data byte flipped" else code == 1, (what, err)
