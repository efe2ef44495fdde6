"""The placement record (analog/placement.py) and its aihwkit mapping (analog/tiles.py)."""
from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import analogai_deploy as ad
from analogai_deploy.analog.placement import Placement, plan
from analogai_deploy.certification import DeviceConfig
from analogai_deploy.hardware.devices import rpu_config
from analogai_deploy.analog.tiles import from_aihwkit, to_aihwkit
from analogai_deploy.errors import OperationFailed, PackageError, UsageError


def _ideal():
    return rpu_config(DeviceConfig(name="ideal"), "torch")


def _hf_conv1d():
    from transformers.pytorch_utils import Conv1D

    return Conv1D(12, 8)  # nf=12 outputs, nx=8 inputs, weight [8, 12]


class _Attn(nn.Module):
    """Cross attention with kdim/vdim (separate projection weights) and a padding mask."""

    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, kdim=6, vdim=10, batch_first=True, add_bias_kv=True)

    def forward(self, x):
        key = x[..., :6].flip(1)
        value = torch.cat([x[..., :10].roll(1, 1)], -1)
        mask = torch.zeros(x.shape[0], x.shape[1] + 0, dtype=torch.bool)
        mask[:, -1] = True
        out, weights = self.mha(x, key, value, key_padding_mask=mask)
        return out + weights.sum()


# (module, input) for every kind convert makes analog; each runs on an ideal aihwkit device
CASES = {
    "linear": (lambda: nn.Linear(8, 5), lambda: torch.randn(3, 4, 8)),
    "conv2d": (lambda: nn.Conv2d(3, 6, 3, padding=1, stride=2), lambda: torch.randn(2, 3, 9, 9)),
    "grouped-conv2d": (lambda: nn.Conv2d(8, 12, 3, padding=2, dilation=2, groups=4), lambda: torch.randn(2, 8, 7, 7)),
    "depthwise-conv2d": (lambda: nn.Conv2d(6, 6, 5, stride=2, padding=2, groups=6, bias=False),
                         lambda: torch.randn(2, 6, 11, 11)),
    "same-reflect-conv2d": (lambda: nn.Conv2d(4, 4, 4, padding="same", padding_mode="reflect", groups=2),
                            lambda: torch.randn(2, 4, 8, 8)),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, padding=1, stride=2, groups=2), lambda: torch.randn(2, 4, 15)),
    "conv3d": (lambda: nn.Conv3d(4, 6, (3, 2, 3), stride=(1, 2, 1), padding=1, dilation=(2, 1, 1), groups=2),
               lambda: torch.randn(2, 4, 7, 6, 5)),
    "hf-conv1d": (_hf_conv1d, lambda: torch.randn(2, 5, 8)),
    "attention": (lambda: nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True),
                  lambda: torch.randn(2, 5, 16)),
    "attention-kdim-vdim": (_Attn, lambda: torch.randn(2, 5, 16)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_kind_on_an_ideal_device_equals_the_digital_layer(case):
    torch.manual_seed(0)
    make, inputs = CASES[case]
    model, x = make().eval(), inputs()
    placement = plan(model)
    assert placement.analog, "nothing planned"
    analog, simulated = to_aihwkit(model, placement, _ideal())
    assert simulated == placement.names
    with torch.no_grad():
        ref, out = model(x), analog(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4), (out - ref).abs().max()
    tiles = sum(1 for _ in analog.analog_tiles())
    entry = placement.analog[0]
    if entry.kind.startswith("conv"):
        assert tiles == entry.groups  # every group its own tile
    # a real (noisy) device changes the outputs: the tiles are really in the path
    noisy, _ = to_aihwkit(model, placement, rpu_config(DeviceConfig(name="PCM"), "torch"))
    noisy.eval()
    noisy.program_analog_weights()
    with torch.no_grad():
        assert not torch.allclose(noisy(x), ref, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_every_kind_comes_back_from_its_tiles(case):
    """from_aihwkit is to_aihwkit's inverse (the hwa_aihwkit recipe trains on the tiles and reads the weights
    back): after AnalogSGD steps on the tiles, the digital model loaded with what comes back computes what
    the tiles compute, on an ideal device, and every state_dict key is there."""
    from aihwkit.optim import AnalogSGD

    from analogai_deploy._state import load_state

    torch.manual_seed(0)
    make, inputs = CASES[case]
    model, x = make().eval(), inputs()
    placement = plan(model)
    analog, _ = to_aihwkit(model, placement, _ideal())
    back = from_aihwkit(analog, placement)
    assert set(back) == set(model.state_dict())
    for key, value in model.state_dict().items():
        assert torch.allclose(back[key], value, atol=1e-6), key
    opt = AnalogSGD(analog.parameters(), lr=0.5)
    opt.regroup_param_groups(analog)
    analog.train()
    for _ in range(2):
        opt.zero_grad()
        analog(x).square().mean().backward()
        opt.step()
    analog.eval()
    trained = copy.deepcopy(model)
    load_state(trained, from_aihwkit(analog, placement))
    changed = [e.name for e in placement.analog
               if not torch.equal(trained.get_submodule(e.name).state_dict()[next(iter(e.matrices))],
                                  model.get_submodule(e.name).state_dict()[next(iter(e.matrices))])]
    assert changed == placement.names  # the training reached every analog layer's weights
    with torch.no_grad():
        ref, out = trained(x), analog(x)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4), (out - ref).abs().max()


def test_record_lists_every_module_and_round_trips():
    from torchvision.models import mobilenet_v3_small

    model = mobilenet_v3_small(num_classes=10)
    p = plan(model, ad.AnalogConfig(keep_first_last=True))
    dw = next(e for e in p.analog if e.groups > 1)
    assert dw.kind == "conv2d" and dw.matrices["weight"] == [1, 9] and dw.weight_shape[1] == 1
    assert {e.name for e in p.digital if "keep_first_last" in e.reason} == {"features.0.0", "classifier.3"}
    listed = {e.name for e in p.analog} | {e.name for e in p.digital}
    owners = {n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}
    assert owners == listed
    again = Placement.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again.sha256 == p.sha256 and again.analog == p.analog
    tampered = p.to_dict()
    tampered["analog"] = tampered["analog"][1:]
    with pytest.raises(PackageError, match="sha256"):
        Placement.from_dict(tampered)


def test_gpt2_and_attention_matrices():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16))
    p = plan(gpt2)
    attn = p.entry("transformer.h.0.attn.c_attn")
    assert (attn.kind, attn.weight_shape, attn.matrices) == ("hf_conv1d", [32, 96], {"weight": [96, 32]})
    mha = plan(nn.TransformerEncoderLayer(16, 4, 32)).entry("self_attn")
    assert mha.matrices == {"in_proj_weight": [48, 16], "out_proj.weight": [16, 16]}


def test_custom_registered_layer_is_refused_by_certify_naming_it(scale_layer, registered_layer):
    Scale, AnalogScale = scale_layer
    with registered_layer(Scale, AnalogScale):
        model = nn.Sequential(nn.Linear(4, 4), Scale())
        p = plan(model)
        assert [e.kind for e in p.analog] == ["linear", "custom"]
        with pytest.raises(OperationFailed, match="layer '1' .*no aihwkit mapping"):
            to_aihwkit(model, p, _ideal())


def test_certify_simulates_exactly_the_placement(tmp_path, cli):
    """`convert lenet --keep-first-last`: 2 layers planned, 2 on tiles, the other two digital."""
    pkg = tmp_path / "lenet"
    code, _, err = cli("convert", "lenet", "--keep-first-last", "-o", pkg)
    assert code == 0, err
    config = json.loads((pkg / "config.json").read_text())
    planned = Placement.from_config(config).names
    assert planned == ["4", "9"] and config["conversion"]["converted_layers"] == 2
    code, _, err = cli("certify", pkg, "--repeats", "1", "--times", "1s", "--limit", "16")
    assert code == 0, err
    cert = json.loads((pkg / "certificate.json").read_text())
    assert cert["placement"] == {"sha256": Placement.from_config(config).sha256, "simulated": planned}
    assert cert["conversion"]["analog_layers"] == 2 and cert["conversion"]["tiles"] == 2
    assert cert["conversion"]["digital_modules"] == {"Conv2d": 1, "Linear": 1, "BatchNorm2d": 2}


def test_load_follows_the_record_not_the_settings(tmp_path):
    """A package's analog modules are the record's: editing the record (with its hash) changes what loads."""
    from analogai_deploy.analog.convert import analog_layers

    pkg = ad.convert("lenet", output=tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    record = Placement.from_config(config)
    record.analog = [e for e in record.analog if e.name != "0"]
    config["placement"] = record.serialise()
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    loaded = ad.load(tmp_path / "p")
    assert [n for n, _ in analog_layers(loaded.model)] == ["4", "9", "11"]
    assert loaded.placement.sha256 == record.sha256 != pkg.placement.sha256
    stored = config["placement"]["_data"]
    stored["analog"][0]["name"] = "nosuch"
    stored["sha256"] = Placement.from_dict({**stored, "sha256": None}).sha256
    (tmp_path / "p" / "config.json").write_text(json.dumps(config))
    with pytest.raises(PackageError, match="nosuch"):
        ad.load(tmp_path / "p")


def test_selection_typos_are_usage_errors():
    with pytest.raises(UsageError, match="Conv3x") as err:
        ad.convert("lenet", ad.AnalogConfig(exclude_types=["Conv3x"]), output="/tmp/never-written")
    assert "Conv3d" in str(err.value) or "Conv2d" in str(err.value)
    with pytest.raises(UsageError, match="nomatch") as err:
        ad.convert("lenet", ad.AnalogConfig(include=["nomatch*"]), output="/tmp/never-written")
    assert "0" in err.value.hint


def test_modules_that_check_their_state_dict_version_load(tmp_path):
    """torchvision's MNASNet refuses a state_dict without torch's version metadata (safetensors has none)."""
    pkg = ad.convert("mnasnet0_5", output=tmp_path / "m", num_classes=10, input_shape=[3, 32, 32])
    loaded = ad.load(tmp_path / "m")
    assert loaded.placement.names == pkg.placement.names
    assert all(a.equal(b) for a, b in zip(loaded.model.state_dict().values(), pkg.model.state_dict().values()))


def test_a_model_that_does_not_fit_its_placement_is_refused_alike_by_load_and_both_engines():
    """One check (placement.placed) for every stage that looks a placement entry up: a layer renamed or
    retyped since the record was written is a PackageError naming it, never a guess."""
    from analogai_deploy.analog.placement import apply
    from analogai_deploy.certification.fast import FastModel

    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    placement = plan(model)
    retyped = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Conv1d(6, 3, 1))  # "2" is a Conv1d now
    missing = nn.Sequential(nn.Linear(8, 6))
    for other, found in ((retyped, "Conv1d"), (missing, "nothing")):
        message = f"the placement puts Linear '2' on tiles, but the model has {found} there"
        for build in (lambda m: apply(copy.deepcopy(m), placement),
                      lambda m: to_aihwkit(m, placement, _ideal()),
                      lambda m: FastModel(m, rpu_config(DeviceConfig(name="PCM"), "torch"), placement=placement)):
            with pytest.raises(PackageError, match=message):
                build(other)
