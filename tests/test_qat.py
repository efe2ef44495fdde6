"""Quantization-aware training: weight / activation grids, STE, ranges, package round trip, config checks."""
from __future__ import annotations

import copy
import dataclasses
import shutil

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from analogai_deploy.analog.config import AnalogConfig
from analogai_deploy.analog.convert import analog_layers, convert, noise_off
from analogai_deploy.analog.layers import noisy
from analogai_deploy.errors import PackageError, UsageError
from analogai_deploy.analog import qat
from analogai_deploy.analog.qat import QuantConfig


def _lenet():
    from analogai_deploy.sources.builtin import lenet

    torch.manual_seed(0)
    model = lenet(num_classes=10)
    convert(model, AnalogConfig())
    return model


def _distinct_per_channel(w: torch.Tensor, axis: int = 0) -> int:
    w = w.detach().movedim(axis, 0).reshape(w.shape[axis], -1)
    return max(len(torch.unique(row)) for row in w)


def _wide():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1000, 4))
    convert(model, AnalogConfig())
    return model


@pytest.mark.parametrize("w_bits, make", [(2, _lenet), (4, _lenet), (6, _lenet), (8, _wide)])
def test_forward_weights_take_at_most_2_to_the_w_bits_values_per_output_channel(w_bits, make):
    model = make()
    # not vacuous: in full precision some output channel has more distinct values than the grid allows
    assert max(_distinct_per_channel(layer.weight) for _, layer in analog_layers(model)) > 2**w_bits
    qat.attach(model, QuantConfig(w_bits=w_bits))
    for name, layer in analog_layers(model):
        w = noisy(layer.weight, layer.analog)  # what the forward pass multiplies with (sigma = 0)
        assert _distinct_per_channel(w) <= 2**w_bits, name
        # the grid is symmetric per row: multiples of max|W_row| / (2^(b-1)-1)
        rows = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        step = rows.abs().amax(1, keepdim=True) / (2 ** (w_bits - 1) - 1)
        k = w.detach().reshape_as(rows) / step
        torch.testing.assert_close(k, k.round(), atol=1e-3, rtol=0)


def test_the_forward_pass_uses_quantized_weights_and_inputs():
    model = _lenet()
    qat.attach(model, QuantConfig(w_bits=3, a_bits=4))
    fc = model[9]
    x = torch.randn(5, fc.in_features)
    model.train()
    out = fc(x)
    xq = fc.analog.input_quant(x)
    assert len(torch.unique(xq)) <= 2**4
    torch.testing.assert_close(out, F.linear(xq, fc.analog.weight_quant(fc.weight), fc.bias))
    assert not torch.allclose(out, F.linear(x, fc.weight, fc.bias), atol=1e-3)


def test_straight_through_gradients():
    wq = qat.WeightQuantizer(bits=2)
    w = torch.randn(4, 6, requires_grad=True)
    c = torch.randn(4, 6)
    (wq(w) * c).sum().backward()
    torch.testing.assert_close(w.grad, c)  # rounding is invisible to the gradient

    layer = nn.Linear(3, 2)
    aq = qat.ActQuantizer(layer, bits=4, act_max=1.0)
    x = torch.tensor([-2.0, -0.5, 0.3, 0.9, 1.5], requires_grad=True)
    aq(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # clipped outside the range


def test_activation_range_follows_training_and_freezes_in_eval():
    layer = nn.Linear(3, 2)
    aq = qat.ActQuantizer(layer, bits=8, act_range="ema", momentum=0.5)
    layer.train()
    aq(torch.tensor([1.0, -2.0]))
    assert aq.act_max.item() == pytest.approx(2.0)  # first batch sets it
    aq(torch.tensor([4.0]))
    assert aq.act_max.item() == pytest.approx(3.0)  # 2 + 0.5 * (4 - 2)
    layer.eval()
    y = aq(torch.tensor([10.0, 1.0]))
    assert aq.act_max.item() == pytest.approx(3.0)
    assert y[0].item() == pytest.approx(3.0)  # clipped at the frozen range

    running = qat.ActQuantizer(layer.train(), bits=8, act_range="max")
    for v in (1.0, 3.0, 2.0):
        running(torch.tensor([v]))
    assert running.act_max.item() == pytest.approx(3.0)


def test_hf_conv1d_quantizes_per_output_column_and_attention_runs():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(6, 16), nn.ReLU(), Conv1D(4, 6))  # weights [in, out]
    convert(model, AnalogConfig())
    qat.attach(model, QuantConfig(w_bits=2))
    layer = model[0]
    assert layer.analog.weight_quant.axis == 1
    w = noisy(layer.weight, layer.analog)
    assert _distinct_per_channel(w, axis=1) <= 4
    # each column keeps its own max (a per-row scale would flatten small columns to 0)
    torch.testing.assert_close(w.abs().amax(0), layer.weight.detach().abs().amax(0))
    assert model(torch.randn(3, 16)).shape == (3, 4)

    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    holder = nn.Sequential()
    holder.add_module("attn", mha)
    convert(holder, AnalogConfig())
    qat.attach(holder, QuantConfig(w_bits=3))
    assert mha.analog.weight_quant.axis == 0 and mha.analog.input_quant is None
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        out = mha(x, x, x)[0]
        qat.detach(holder)
        ref = mha(x, x, x)[0]
    assert out.shape == ref.shape and not torch.allclose(out, ref, atol=1e-4)
    qat.attach(holder, QuantConfig(w_bits=3))
    assert qat.describe(holder, QuantConfig(w_bits=3)).layers["attn"]["act_max"] is None


def test_describe_restore_round_trip_through_a_package(lenet_pkg, tmp_path):
    from analogai_deploy import package
    from analogai_deploy.data import load

    pkg_dir = tmp_path / "lenet"
    shutil.copytree(lenet_pkg, pkg_dir)
    pkg = package.load(pkg_dir)
    model = pkg.model
    keys_before = set(model.state_dict())
    cfg = qat.attach(model, QuantConfig(w_bits=6, a_bits=5))
    data = load("digits", input_shape=[1, 8, 8])
    x, y = data.train.tensors
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for i in range(0, 256, 64):
        F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    section = qat.describe(model, cfg)
    assert set(model.state_dict()) == keys_before  # nothing of QAT in the weight file
    assert section.w_bits == 6 and section.a_bits == 5
    assert all(v["act_max"] > 0 for v in section.layers.values())

    config = dict(pkg.config, quantization=section.serialise())
    written = package.write(pkg_dir, config, model=model, base=pkg_dir)
    again = package.load(pkg_dir)
    for (name, a), (_, b) in zip(analog_layers(model), analog_layers(again.model)):
        assert b.analog.weight_quant.bits == 6 and b.analog.input_quant.bits == 5
        assert b.analog.input_quant.act_max.item() == pytest.approx(a.analog.input_quant.act_max.item(), rel=1e-6)
    xt = data.test.tensors[0][:50]
    with torch.no_grad(), noise_off(model), noise_off(again.model):
        torch.testing.assert_close(again.model(xt), model(xt))

    bad = dict(written.config, quantization=dataclasses.replace(section, layers={"nope": {"act_max": 1.0}}).serialise())
    package.write(pkg_dir, bad, base=pkg_dir)
    with pytest.raises(PackageError, match="does not fit the model"):
        package.load(pkg_dir)


def test_deepcopied_models_keep_their_own_ranges():
    model = _lenet()
    qat.attach(model, QuantConfig())
    model.train()
    model(torch.randn(4, 1, 8, 8))
    clone = copy.deepcopy(model)
    q, qc = model[0].analog.input_quant, clone[0].analog.input_quant
    assert qc.owner is clone[0] and qc is not q
    clone(torch.randn(4, 1, 8, 8) * 10)
    assert qc.act_max.item() > q.act_max.item()


def test_calibrate_sets_ranges_from_data():
    model = _lenet()
    qat.attach(model, QuantConfig())
    x = torch.randn(32, 1, 8, 8)
    qat.calibrate(model, [x[:16], x[16:]])
    assert model[0].analog.input_quant.act_max.item() == pytest.approx(x.abs().max().item())
    assert model.training  # mode restored


@pytest.mark.parametrize("bad, match", [
    ({"a_bits": 0}, r"a_bits must be in 2\.\.16, got 0"),
    ({"a_bits": "1"}, r"a_bits must be in 2\.\.16, got 1"),
    ({"w_bits": 17}, r"w_bits must be in 2\.\.16, got 17"),
    ({"act_range": "minmax"}, "must be one of 'ema', 'max'"),
    ({"ema_momentum": 0}, r"ema_momentum must be in \(0, 1\]"),
    ({"wbits": 8}, "did you mean: w_bits"),
])
def test_invalid_settings_fail_with_a_clear_message(bad, match):
    with pytest.raises(UsageError, match=match) as info:
        QuantConfig.from_dict(bad)
    assert "\n" not in str(info.value)


def test_attach_needs_an_analog_model():
    with pytest.raises(UsageError, match="no analog layers"):
        qat.attach(nn.Sequential(nn.ReLU()), QuantConfig())


def test_match_tile_takes_the_dac_bits():
    cfg = QuantConfig(w_bits=6, a_bits=8, match_tile=True)
    assert qat.tile_bits() == (7, 9)  # aihwkit 1.1.0 IOParameters: 7-bit DAC, 9-bit ADC
    model = _lenet()
    used = qat.attach(model, cfg)
    assert (used.w_bits, used.a_bits) == (6, 7)
    model.train()
    model(torch.randn(4, 1, 8, 8))
    section = qat.describe(model, cfg)
    assert section.a_bits == 7 and section.out_bits == 9 and section.match_tile is True


TINY = ["training.rounds=1", "training.batch_size=128", "recovery.noise_2=null", "recovery.noise_3=null",
        "recovery.noise_4=null", "training.cpu_threads=1"]


def test_msnat_with_sam_and_qat_end_to_end(cli, lenet_pkg, tmp_path):
    import json

    import onnx

    import analogai_deploy as ad
    from analogai_deploy import package

    out = tmp_path / "lenet-robust"
    code, stdout, stderr = cli("recover", lenet_pkg, "--recipe", "msnat", "-o", out, "--json", *TINY,
                               "recovery.optimizer.sam=true", "recovery.qat=True", "recovery.quant.w_bits=4")
    assert code == 0, stderr
    assert json.loads(stdout)["recipe"] == "msnat"
    pkg = package.load(out)
    section = package.section(pkg.config, "quantization")
    assert (section.w_bits, section.a_bits) == (4, 8)  # qat=True alone: 8 bits, w_bits overridden
    resolved = pkg.config["recipe"]["resolved"]["recovery"]
    assert resolved["optimizer"]["sam"] is True and resolved["qat"] is True
    assert all(v["act_max"] > 0 for v in section.layers.values())
    for name, layer in analog_layers(pkg.model):
        assert layer.analog.weight_quant.bits == 4
        assert _distinct_per_channel(noisy(layer.weight, layer.analog)) <= 16, name
    # export turns the recorded quantization into QDQ nodes and checks them against this model
    result = ad.export(out)
    assert sorted(result.quantized_layers) == sorted(section.layers) and result.record["qdq"]
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


@pytest.mark.parametrize("override, match", [
    ("recovery.quant.a_bits=0", r"a_bits must be in 2\.\.16, got 0"),
    ("recovery.quant.w_bits=1", r"w_bits must be in 2\.\.16, got 1"),
    ("recovery.optimizer.adaptive=true", "needs recovery.optimizer.sam=true"),
    ("recovery.adversarial.PGD.steps=0", "PGD.steps must be >= 1"),
    ("recovery.adversarial.FGSM.eps=8", r"FGSM.eps must be in \(0, 1\]"),
])
def test_invalid_combinations_fail_before_training(cli, lenet_pkg, tmp_path, override, match):
    import re

    code, stdout, stderr = cli("recover", lenet_pkg, "-o", tmp_path / "never", "recovery.qat=true", override)
    assert code == 2
    assert re.search(match, stderr), stderr
    assert not (tmp_path / "never").exists()
