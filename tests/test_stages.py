"""Every model through every stage: convert -> recover (1 round) -> export -> certify (1 repeat), and the
certificate simulates exactly config.json's placement.

The default run takes 12 torchvision families at 3x32x32, every grouped-conv family among them, certified
on the fast engine (which reads the same placement and gives each conv group its own tiles), and the
four tiny Hugging Face models (BERT classifier, GPT-2 LM, Llama-style LM, ViT classifier, built from
configs) on the aihwkit engine. The same torchvision families on the aihwkit engine are `slow`: on
aihwkit's Python tiles each depthwise channel is its own tile set, thousands of tiles, and one grouped
model takes minutes on 2 CPU cores; so is the certification of all 80 torchvision classifiers. Every
layer kind's aihwkit mapping (grouped and depthwise convs included) is checked against the digital layer
on an ideal device in test_placement.py, in the default run.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import analogai_deploy as ad
from analogai_deploy.package import read_config

import hf_models
from data_helpers import cifar10_from_digits

# the default table: every grouped-conv family (MobileNetV2/V3, EfficientNet, RegNet, ShuffleNet, MNASNet,
# ConvNeXt) and five more (plain, fire, dense and inception blocks, a windowed-attention transformer)
FAMILIES = ["regnet_x_400mf", "resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
            "shufflenet_v2_x0_5", "mnasnet0_5", "convnext_tiny", "squeezenet1_1", "densenet121", "googlenet",
            "swin_t"]
SLOW_FAMILIES = FAMILIES + ["regnet_y_400mf"]
HF = ["bert_cls", "gpt2_lm", "llama_lm", "vit_cls"]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> Path:
    return cifar10_from_digits(tmp_path_factory.mktemp("cifar"), per_batch=2, test=4)


def _hf_folder(kind: str, root: Path, minilm_dir: Path) -> Path:
    return {"bert_cls": lambda: hf_models.bert_classifier(root / kind, minilm_dir),
            "gpt2_lm": lambda: hf_models.gpt2_lm(root / kind), "llama_lm": lambda: hf_models.llama_lm(root / kind),
            "vit_cls": lambda: hf_models.vit_classifier(root / kind)}[kind]()


def through_stages(spec: str, tmp: Path, data: str, engine: str = "aihwkit", write: bool = True,
                   **convert_kw) -> dict:
    pkg = ad.convert(spec, output=tmp / "p", **convert_kw)
    placement = pkg.placement.to_dict()
    assert placement["analog"], "nothing planned"
    ad.recover(tmp / "p", recipe="vanilla", data=data, output=tmp / "r", overrides=["training.rounds=1"])
    recovered = read_config(tmp / "r")
    assert recovered["placement"] == pkg.config["placement"]  # recover reads the record, never re-derives it
    ad.export(tmp / "r", samples=2)
    image = pkg.config["input"]["kind"] == "image"
    cert = ad.certify(tmp / "r", repeats=1, times="1s", limit=4, data=data if image else None, engine=engine,
                      write=write)
    assert cert["engine"] == engine
    planned = [e["name"] for e in placement["analog"]]
    assert cert["placement"]["simulated"] == planned
    assert cert["placement"]["sha256"] == placement["sha256"]
    assert cert["conversion"]["analog_layers"] == len(planned)
    if not image:  # distilled without labels: certified against the teacher recover kept, the converted weights
        assert cert["data"]["reference"]["sha256"] == pkg.weights_sha256 == recovered["reference"]["sha256"]
    kinds = {e["kind"] for e in placement["analog"]}
    return {"kinds": kinds, "cert": cert, "placement": placement}


GROUPED = {"regnet_x_400mf", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5",
           "mnasnet0_5", "convnext_tiny", "regnet_y_400mf"}


def _family(name: str, cifar: Path, tmp: Path, engine: str) -> None:
    # the certificate itself is what is checked; writing it (and its plot) is covered by the HF models here
    out = through_stages(name, tmp, f"cifar10:{cifar}", engine=engine, write=engine == "aihwkit", num_classes=10,
                         input_shape=[3, 32, 32])
    grouped = [e for e in out["placement"]["analog"] if e["groups"] > 1]
    assert bool(grouped) == (name in GROUPED)
    assert out["cert"]["conversion"]["tiles"] >= sum(e["groups"] for e in out["placement"]["analog"])


def test_the_table_has_every_grouped_family():
    assert len(FAMILIES) >= 12 and GROUPED - {"regnet_y_400mf"} <= set(FAMILIES)


@pytest.mark.parametrize("name", FAMILIES)
def test_torchvision_family_through_every_stage(name, cifar, tmp_path):
    _family(name, cifar, tmp_path, "fast")


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_FAMILIES)
def test_torchvision_family_through_every_stage_on_aihwkit(name, cifar, tmp_path):
    _family(name, cifar, tmp_path, "aihwkit")


@pytest.mark.parametrize("kind", HF)
def test_tiny_hugging_face_model_through_every_stage(kind, cifar, tmp_path, minilm_dir):
    folder = _hf_folder(kind, tmp_path / "src", minilm_dir)
    data = f"cifar10:{cifar}" if kind == "vit_cls" else "corpus"
    out = through_stages(f"hf:{folder}", tmp_path, data)
    task = out["cert"].get("task") or read_config(tmp_path / "r")["task"]
    expected = {"bert_cls": "sequence-classification", "gpt2_lm": "causal-lm", "llama_lm": "causal-lm",
                "vit_cls": "image-classification"}[kind]
    assert task == expected
    if kind == "gpt2_lm":
        assert "hf_conv1d" in out["kinds"]  # GPT-2's Conv1D layers are on tiles, not left digital


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fast", "aihwkit"])
def test_every_torchvision_classifier_certifies(tmp_path, engine):
    """All 80 torchvision classifiers: convert at 3x32x32 (or, where the model does not run at that size, its
    own size) and certify (1 repeat, 2 samples, 1 s), the simulated layers equal to the placement. Failures
    are collected and reported. scripts/certify_every_classifier.py makes the same calls, one model per line
    of JSON, with a time and memory watch (the figures in docs/certify.md)."""
    from analogai_deploy.errors import UsageError
    from analogai_deploy.sources import torchvision_models

    failures = {}
    for name in torchvision_models.names():
        try:
            try:
                pkg = ad.convert(name, output=tmp_path / name, num_classes=10, input_shape=[3, 32, 32])
            except UsageError:  # fixed-size (ViT) or too deep for 32x32 (AlexNet, Inception)
                pkg = ad.convert(name, output=tmp_path / name, num_classes=10)
            cert = ad.certify(tmp_path / name, repeats=1, times="1s", limit=2, metric="agreement", write=False,
                              engine=engine)
            assert cert["placement"]["simulated"] == pkg.placement.names
            assert cert["placement"]["sha256"] == pkg.placement.sha256
        except Exception as exc:  # collected, then reported all at once
            failures[name] = f"{type(exc).__name__}: {exc}"
        finally:
            shutil.rmtree(tmp_path / name, ignore_errors=True)  # 80 packages would take ~15 GB
    assert not failures, failures


def test_a_plain_state_dict_loads_into_a_model_that_checks_its_version():
    """recover's best state is a plain dict (and a checkpoint read from disk has no metadata): torchvision's
    MNASNet refused it ('version should be set to 1 or 2') until the model's module versions were attached."""
    from torchvision.models import mnasnet0_5

    from analogai_deploy._state import load_state

    model = mnasnet0_5(num_classes=10)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="version"):
        model.load_state_dict(state)
    load_state(model, state)


GROUPED_NET = '''
from torch import nn


def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),
                         nn.ReLU(), nn.Conv2d(8, 16, 1, groups=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, num_classes))
'''


def _hwa_round(cli, spec: str, tmp: Path, data: str, **convert_kw):
    """recover --recipe hwa_aihwkit for one round: the tiles are certify's mapping (tiles.to_aihwkit), and
    what training did to them comes back into the package."""
    src = ad.convert(spec, output=tmp / "p", **convert_kw)
    code, _, err = cli("recover", tmp / "p", "--recipe", "hwa_aihwkit", "--data", data, "-o", tmp / "r",
                       "training.rounds=1", "training.batch_size=8")
    assert code == 0, err
    out = ad.load(tmp / "r")
    assert out.config["placement"] == src.config["placement"]
    assert out.config["training"]["mode"] == "aihwkit"
    before, after = src.model.state_dict(), out.model.state_dict()
    assert set(before) == set(after)
    for entry in src.placement.analog:  # every analog layer was trained on its tiles and came back
        key = f"{entry.name}.{next(iter(entry.matrices))}"
        assert after[key].shape == before[key].shape
        assert not torch.equal(after[key], before[key]), key
    return src, out


def test_hwa_recipe_trains_grouped_convs_on_their_tiles(cifar, tmp_path, cli):
    (tmp_path / "net.py").write_text(GROUPED_NET)
    src, _ = _hwa_round(cli, f"{tmp_path / 'net.py'}:build", tmp_path, f"cifar10:{cifar}", input_shape=[3, 32, 32])
    assert sorted(e.groups for e in src.placement.analog) == [1, 1, 2, 8]


def test_hwa_recipe_trains_gpt2_conv1d_on_tiles(tmp_path, cli):
    src, out = _hwa_round(cli, f"hf:{hf_models.gpt2_lm(tmp_path / 'gpt2')}", tmp_path, "corpus")
    assert {e.kind for e in src.placement.analog} >= {"hf_conv1d"}
    cert = ad.certify(tmp_path / "r", repeats=1, times="1s", limit=4, write=False)  # and it certifies
    assert cert["placement"]["simulated"] == out.placement.names
