"""Conversion: every analog layer type, the report, and the torchvision / Hugging Face sources."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import analogai_deploy as ad
from analogai_deploy.analog.convert import analog_layers, convert
from analogai_deploy.analog.layers import AnalogLinear
from analogai_deploy.errors import UsageError
from analogai_deploy.sources import resolve

# Families: ResNet, MobileNet (depthwise), EfficientNet, ConvNeXt, ViT, SqueezeNet, DenseNet, RegNet, ShuffleNet,
# MNASNet, GoogLeNet, Swin. Input sizes kept small where the architecture allows it.
ARCHS = [
    ("resnet18", 64), ("mobilenet_v3_small", 64), ("efficientnet_b0", 64), ("convnext_tiny", 64),
    ("vit_b_16", 224), ("squeezenet1_1", 64), ("densenet121", 64), ("regnet_x_400mf", 64),
    ("shufflenet_v2_x0_5", 64), ("mnasnet0_5", 64), ("googlenet", 64), ("swin_t", 64),
]


def _check_conversion(model: nn.Module, x) -> None:
    """Noise off: bit-identical to the digital model. Noise on: different, and every analog layer perturbed."""
    model.eval()
    for p in model.parameters():  # zero-initialised heads (ViT) would hide the noise
        if p.dim() > 1 and not p.detach().abs().amax():
            nn.init.normal_(p, std=0.02)
    call = (lambda m: m(**x)) if isinstance(x, dict) else (lambda m: m(x))
    with torch.no_grad():
        ref = _tensor(call(model))
        report = convert(model)
        assert report.converted, "nothing converted"
        assert _tensor(call(model)).equal(ref)
        with ad.noise(model, 0.1):
            assert not _tensor(call(model)).equal(ref)
    return report


def _tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "last_hidden_state"):
        return out.last_hidden_state
    if hasattr(out, "logits"):
        return out.logits
    return out[0]


@pytest.mark.parametrize("name,size", ARCHS, ids=[a for a, _ in ARCHS])
def test_torchvision_architectures_convert_and_run(name, size):
    torch.manual_seed(0)
    src = resolve(name, num_classes=10)
    report = _check_conversion(src.model, torch.randn(1, 3, size, size))
    assert report.analog_share > 0.5
    # nothing with parameters disappears from the report
    listed = {r.name for r in report.converted} | {r.name for r in report.digital}
    for mod_name, module in src.model.named_modules():
        if any(True for _ in module.parameters(recurse=False)) and not mod_name.endswith("out_proj"):
            assert any(mod_name == n or mod_name.startswith(n + ".") for n in listed), mod_name


@pytest.mark.slow
def test_every_torchvision_classification_model_converts():
    from analogai_deploy.sources import torchvision_models

    failures = {}
    for name in torchvision_models.names():
        try:
            src = resolve(name, num_classes=10)
            size = src.input["shape"][1]
            _check_conversion(src.model, torch.randn(1, 3, size, size))
        except Exception as exc:  # collected, then reported all at once
            failures[name] = f"{type(exc).__name__}: {exc}"
    assert not failures, failures


def test_noise_reaches_every_layer_of_resnet18_residual_blocks():
    model = resolve("resnet18", num_classes=10).model.eval()
    convert(model)
    seen = []
    for name, layer in analog_layers(model):
        layer.register_forward_hook(lambda m, i, o, name=name: seen.append((name, m.analog.sigma)))
    with torch.no_grad(), ad.noise(model, 0.2):
        model(torch.randn(1, 3, 32, 32))
    names = {n for n, _ in seen}
    assert {"layer1.0.conv1", "layer2.0.downsample.0", "layer4.1.conv2", "fc"} <= names
    assert len(names) == 21 and all(s == 0.2 for _, s in seen)


def test_weight_noise_scale_and_straight_through_gradient():
    torch.manual_seed(0)
    lin = nn.Linear(256, 256, bias=False)
    convert(lin)  # a bare layer converts too
    assert isinstance(lin, AnalogLinear)
    x = torch.eye(256)
    ad.set_noise(lin, 0.3)
    out = lin(x)  # rows are W^T + noise
    eps = out - lin.weight.detach().t()
    expected = lin.analog.c * 0.3 * lin.weight.detach().abs().max()
    assert abs(eps.std().item() / expected.item() - 1) < 0.02
    assert abs(lin.analog.c - 0.7776) < 1e-4
    out.sum().backward()
    assert torch.allclose(lin.weight.grad, torch.ones_like(lin.weight))  # d(sum(W^T + eps))/dW = 1


def test_multihead_attention_projections_are_analog():
    torch.manual_seed(0)
    mha = nn.Sequential(nn.Linear(16, 16), nn.TransformerEncoderLayer(16, 2, 32, batch_first=True))
    keys = set(mha.state_dict())
    report = _check_conversion(mha, torch.randn(2, 5, 16))
    assert set(mha.state_dict()) == keys
    types = {r.type for r in report.converted}
    assert "MultiheadAttention" in types and "out_proj" not in " ".join(r.name for r in report.digital)


def test_hf_gpt2_conv1d_is_converted():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16))
    report = _check_conversion(model, {"input_ids": torch.randint(0, 100, (1, 8))})
    assert sum(r.type == "Conv1D" for r in report.converted) == 4


def test_minilm_identical_with_noise_off_and_different_with_noise_on(minilm_dir, tmp_path):
    from transformers import AutoModel

    pkg = ad.convert(f"hf:{minilm_dir}", output=tmp_path / "minilm")
    assert sum(r.type == "Linear" for r in pkg.report.converted) == 37
    ref = AutoModel.from_pretrained(minilm_dir).eval()
    ids = torch.randint(1000, 5000, (2, 12))
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    loaded = ad.load(tmp_path / "minilm").model
    with torch.no_grad():
        r = ref(**x).last_hidden_state
        assert loaded(**x).last_hidden_state.equal(r)
        with ad.noise(loaded, 0.1):
            assert (loaded(**x).last_hidden_state - r).abs().max() > 1e-2
    assert (tmp_path / "minilm" / "tokenizer.json").exists()


def test_include_exclude_and_keep_first_last():
    model = resolve("lenet").model
    report = convert(model, ad.AnalogConfig(keep_first_last=True))
    assert [r.name for r in report.converted] == ["3", "9"] or len(report.converted) == 2
    kept = {r.name: r.reason for r in report.digital if "keep_first_last" in r.reason}
    assert set(kept) == {"0", "11"}
    model = resolve("lenet").model
    report = convert(model, ad.AnalogConfig(exclude=["9"], exclude_types=["Conv2d"]))
    assert [r.name for r in report.converted] == ["11"]
    assert "excluded by pattern '9'" in report.summary() and "excluded by type Conv2d" in report.summary()


def test_register_layer_extends_conversion(scale_layer, registered_layer):
    Scale, AnalogScale = scale_layer
    model = nn.Sequential(Scale(), nn.Linear(4, 2))
    report = convert(model)
    assert any(r.type == "Scale" and "register_layer" in r.reason for r in report.digital)  # reported, not skipped
    with registered_layer(Scale, AnalogScale):
        model = nn.Sequential(Scale(), nn.Linear(4, 2))
        assert [r.analog_type for r in convert(model).converted] == ["AnalogScale", "AnalogLinear"]
    assert not convert(nn.Sequential(Scale())).converted  # unregistered after the block
    with pytest.raises(TypeError):
        ad.register_layer(Scale, AnalogLinear)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UsageError) as err:
        resolve("resnet19")
    assert "resnet18" in err.value.hint
    with pytest.raises(UsageError, match="download"):
        resolve("resnet18", weights="IMAGENET1K_V1")


def test_local_factory_and_weights_file(tmp_path):
    from safetensors.torch import save_file

    code = tmp_path / "nets.py"
    code.write_text(
        "from torch import nn\n"
        "def tiny(num_classes=3):\n    return nn.Sequential(nn.Flatten(), nn.Linear(12, num_classes))\n"
    )
    torch.manual_seed(1)
    trained = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    save_file(trained.state_dict(), tmp_path / "w.safetensors")
    pkg = ad.convert(f"{code}:tiny", output=tmp_path / "pkg", num_classes=3, weights=str(tmp_path / "w.safetensors"),
                     input_shape=[3, 2, 2])
    assert ad.load(tmp_path / "pkg").model.state_dict()["1.weight"].equal(trained[1].weight)
    assert pkg.config["source"]["factory"] == "tiny"
    with pytest.raises(UsageError, match="names no factory"):
        resolve(str(code))
    with pytest.raises(UsageError, match="did you mean"):
        resolve(f"{code}:tinyy")
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    ad.convert(f"{code}:tiny", output=tmp_path / "pkg2", num_classes=3, weights=str(tmp_path / "w.pt"),
               input_shape=[3, 2, 2])
    with pytest.raises(UsageError, match="do not fit"):
        resolve(f"{code}:tiny", num_classes=5, weights=str(tmp_path / "w.pt"))
