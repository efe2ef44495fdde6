"""A Hugging Face package is a Hugging Face model: transformers' Auto classes and pipelines load it as it is.

config.json is the model's own transformers config with the toolkit's record under its "analogai" key
(package.read_record). Every package here goes convert -> recover (1 round) -> certify -> publish to the
Hub stand-in -> pull, and transformers loads the converted, the recovered and the pulled folder, and the
published repo by its id, with the clean outputs of `ad.load(PKG).model` (noise off). The certificates
are made on the ideal device: what is checked is the layout and the loaders, not analog accuracy.
"""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
import transformers
import yaml
from hub_server import serve

import analogai_deploy as ad
import hf_models
from analogai_deploy import package as pkgio
from analogai_deploy import zoo
from analogai_deploy.analog.convert import noise_off
from analogai_deploy.errors import PackageError
from analogai_deploy.sources.huggingface import TASKS

TOL = 1e-5
PIPELINES = {"sequence-classification": "text-classification", "feature-extraction": "feature-extraction",
             "causal-lm": "text-generation", "image-classification": "image-classification"}
TEXT = "the cat sat on the mat"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    server = serve(monkeypatch, tmp_path / "hf-cache")
    yield server
    server.stop()


def _source(kind, root, minilm_dir):
    if kind == "minilm":
        return minilm_dir
    return {"bert_cls": lambda: hf_models.bert_classifier(root / kind, minilm_dir),
            "gpt2_lm": lambda: hf_models.gpt2_lm(root / kind), "llama_lm": lambda: hf_models.llama_lm(root / kind),
            "vit_cls": lambda: _with_processor(hf_models.vit_classifier(root / kind))}[kind]()


def _with_processor(folder):
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _image():
    from PIL import Image

    return Image.fromarray((torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy())


def _main_output(out) -> torch.Tensor:
    return out["logits"] if "logits" in out else out["last_hidden_state"]


def _inputs(pkg, where):
    if pkg.config["input"]["kind"] == "image":
        return {"pixel_values": torch.randn(2, *pkg.config["input"]["shape"], generator=torch.Generator().manual_seed(0))}
    tok = transformers.AutoTokenizer.from_pretrained(where)
    return dict(tok([TEXT, "a dog ran"], return_tensors="pt", padding=True))


def check_transformers_loads(where, pkg) -> None:
    """AutoConfig, AutoTokenizer, the task's AutoModel class and its pipeline load `where` (a folder or a
    repo id) with no weight missing or left over, and reproduce the toolkit's clean outputs."""
    task = pkg.config["task"]
    config = transformers.AutoConfig.from_pretrained(where)
    assert config.model_type == pkg.config["source"]["config"]["model_type"]
    model, info = getattr(transformers, TASKS[task]).from_pretrained(where, output_loading_info=True)
    assert not any(info.values()), info  # every tensor has the name transformers expects (tied ones too)
    assert type(model).__name__ == pkg.config["source"]["architecture"]
    x = _inputs(pkg, where)
    with torch.no_grad(), noise_off(pkg.model):
        ours = _main_output(pkg.model(**x))
        theirs = _main_output(model.eval()(**x))
        assert (ours - theirs).abs().max().item() <= TOL
        if task not in PIPELINES:
            return
        pipe = transformers.pipeline(PIPELINES[task], model=where)
        if task == "image-classification":  # the image as the package's own preprocessor_config.json makes it
            single = dict(transformers.AutoImageProcessor.from_pretrained(where)(_image(), return_tensors="pt"))
        else:  # TEXT, unpadded
            single = {k: v[:1, : int(x["attention_mask"][0].sum())] for k, v in x.items()}
        clean = _main_output(pkg.model(**single))[0]
    if task.endswith("classification"):
        scores = {r["label"]: r["score"] for r in pipe(_image() if task == "image-classification" else TEXT,
                                                       top_k=len(config.id2label))}
        assert set(scores) == set(config.id2label.values())
        probs = clean.softmax(-1)
        assert max(abs(scores[config.id2label[i]] - probs[i].item()) for i in range(len(probs))) <= TOL
    elif task == "feature-extraction":
        assert (torch.tensor(pipe(TEXT))[0] - clean).abs().max().item() <= TOL
    else:  # greedy: the first new token is the toolkit's argmax after the prompt
        out = pipe(TEXT, max_new_tokens=1, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
        assert out[-1] == clean[-1].argmax().item()


def _chain(kind, tmp_path, minilm_dir, hub, cifar=None):
    src = _source(kind, tmp_path / "src", minilm_dir)
    data = f"cifar10:{cifar}" if kind == "vit_cls" else "corpus"
    ad.convert(f"hf:{src}", output=tmp_path / "p")
    ad.recover(tmp_path / "p", recipe="vanilla", data=data, output=tmp_path / "r",
               overrides=["training.rounds=1", "training.batch_size=8"])
    ad.certify(tmp_path / "r", device="ideal", repeats=5, times="1s", at="1s", max_drop=5, limit=8,
               data=data if kind == "vit_cls" else None)
    repo = f"analog-lab/{kind}"
    zoo.publish(tmp_path / "r", hub_repo=repo)
    pulled = zoo.pull(f"hf-hub:{repo}", tmp_path / "pulled")
    for folder in ("p", "r", "pulled"):
        raw = json.loads((tmp_path / folder / "config.json").read_text())
        assert raw["model_type"] and raw["analogai"]["format"] == pkgio.FORMAT  # the record beside the config
        check_transformers_loads(str(tmp_path / folder), ad.load(tmp_path / folder))
    check_transformers_loads(repo, pulled)  # from_pretrained by repo id, through the Hub stand-in
    card = (tmp_path / "pulled" / "README.md").read_text()
    meta = yaml.safe_load(card.split("---", 2)[1])
    assert meta["library_name"] == "transformers" and "analog-in-memory-computing" in meta["tags"]
    assert {"ideal", "recipe-vanilla"} <= set(meta["tags"]) and meta["model-index"][0]["results"][0]["metrics"]
    assert f"from_pretrained('hf-hub:{repo}')" in card
    snippet = re.search(r"With transformers:\n\n```python\n(.*?)```", card, re.S).group(1)
    namespace: dict = {}
    exec(snippet, namespace)  # the card's own snippet, by repo id through the Hub stand-in
    assert type(namespace["model"]).__name__ == pulled.config["source"]["architecture"]
    return pulled


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    from data_helpers import cifar10_from_digits

    return cifar10_from_digits(tmp_path_factory.mktemp("cifar"))


def test_hugging_face_package_is_a_transformers_model(tmp_path, minilm_dir, hub):
    _chain("gpt2_lm", tmp_path, minilm_dir, hub)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert_cls", "llama_lm", "vit_cls", "minilm"])
def test_hugging_face_package_is_a_transformers_model_slow(kind, tmp_path, minilm_dir, hub, cifar):
    _chain(kind, tmp_path, minilm_dir, hub, cifar)


@pytest.mark.parametrize("kind", ["minilm", "bert_cls"])
def test_converted_encoder_and_classifier_load_in_transformers_and_their_pipelines(kind, tmp_path, minilm_dir):
    """The default suite's quick look at the two pipelines the chain above runs only when slow."""
    ad.convert(f"hf:{_source(kind, tmp_path / 'src', minilm_dir)}", output=tmp_path / "p")
    check_transformers_loads(str(tmp_path / "p"), ad.load(tmp_path / "p"))


@pytest.fixture
def certified_gpt2(tmp_path):
    ad.convert(f"hf:{hf_models.gpt2_lm(tmp_path / 'src')}", output=tmp_path / "p")
    ad.certify(tmp_path / "p", device="ideal", repeats=2, times="1s", limit=4)
    return tmp_path / "p"


def test_the_toolkit_refuses_a_tampered_package_that_transformers_loads(certified_gpt2):
    raw = bytearray((certified_gpt2 / "model.safetensors").read_bytes())
    raw[-1] ^= 1
    (certified_gpt2 / "model.safetensors").write_bytes(bytes(raw))
    transformers.AutoModelForCausalLM.from_pretrained(certified_gpt2)  # plain loading just gets the weights
    with pytest.raises(PackageError, match="does not match the sha256"):
        ad.load(certified_gpt2)


def test_an_edit_of_the_transformers_config_breaks_the_certificate(certified_gpt2):
    """The transformers config is the record's source["config"]: part of what the certificate binds."""
    file = certified_gpt2 / "config.json"
    raw = json.loads(file.read_text())
    raw["layer_norm_epsilon"] *= 10
    file.write_text(json.dumps(raw))
    with pytest.raises(PackageError, match="edited after certification .*its source"):
        ad.load(certified_gpt2)


def test_migrate_rewrites_an_older_package_without_touching_weights_or_certificate(certified_gpt2, cli):
    record = pkgio.read_config(certified_gpt2)
    (certified_gpt2 / "config.json").write_text(json.dumps(record, indent=2))  # the layout before this one
    before = {f: (certified_gpt2 / f).read_bytes() for f in ("model.safetensors", "certificate.json")}
    with pytest.raises(ValueError, match="model_type"):
        transformers.AutoConfig.from_pretrained(certified_gpt2)
    assert ad.load(certified_gpt2).config == record  # an older package still loads (and its certificate holds)
    code, out, err = cli("migrate", certified_gpt2)
    assert code == 0 and "rewritten in the transformers layout" in out, err
    assert {f: (certified_gpt2 / f).read_bytes() for f in before} == before
    assert pkgio.read_config(certified_gpt2) == record
    check_transformers_loads(str(certified_gpt2), ad.load(certified_gpt2))
    code, out, _ = cli("migrate", certified_gpt2)
    assert code == 0 and "already in today's layout" in out


def test_an_older_package_certifies_and_comes_back_in_todays_layout(tmp_path):
    ad.convert(f"hf:{hf_models.gpt2_lm(tmp_path / 'src')}", output=tmp_path / "p")
    record = pkgio.read_config(tmp_path / "p")
    (tmp_path / "p" / "config.json").write_text(json.dumps(record, indent=2))  # the layout before this one
    cert = ad.certify(tmp_path / "p", device="ideal", repeats=2, times="1s", limit=4)
    assert cert["model_sha256"] == pkgio.model_sha256(record)  # the same record, whatever the layout
    assert json.loads((tmp_path / "p" / "config.json").read_text())["model_type"] == "gpt2"


def test_migrate_refuses_a_tampered_package(certified_gpt2, cli):
    record = pkgio.read_config(certified_gpt2)
    record["analog"]["_data"]["sigma"] = 0.5  # the typed section's fields, inside its envelope
    (certified_gpt2 / "config.json").write_text(json.dumps(record, indent=2))
    code, _, err = cli("migrate", certified_gpt2)
    assert code == 1 and "edited after certification" in err


def test_torchvision_card_rebuilds_the_model_with_torchvision_and_safetensors(tmp_path, monkeypatch):
    pkg = ad.convert("resnet18", output=tmp_path / "r18", num_classes=10, input_shape=[3, 32, 32])
    card = (tmp_path / "r18" / "README.md").read_text()
    code = re.search(r"With torchvision:\n\n```python\n(.*?)```", card, re.S).group(1)
    namespace: dict = {}
    monkeypatch.chdir(tmp_path)
    exec(code, namespace)  # the card's snippet as written, from the folder that holds the package
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), noise_off(pkg.model):
        assert (namespace["model"].eval()(x) - pkg.model(x)).abs().max().item() <= TOL
    assert json.loads((tmp_path / "r18" / "config.json").read_text())["format"] == pkgio.FORMAT  # layout kept


def test_image_and_local_packages_keep_their_layout(lenet_pkg, tmp_path):
    shutil.copytree(lenet_pkg, tmp_path / "l")
    raw = json.loads((tmp_path / "l" / "config.json").read_text())
    assert "analogai" not in raw and raw == pkgio.read_config(tmp_path / "l")


def test_card_names_the_hub_model_it_came_from(lenet_pkg):
    from analogai_deploy.package.card import render

    config = {**pkgio.read_config(lenet_pkg), "source": {"kind": "huggingface", "source": "org/model",
                                                         "task": "causal-lm", "config": {"model_type": "gpt2"}}}
    meta = yaml.safe_load(render(config).split("---", 2)[1])
    assert meta["base_model"] == "org/model" and meta["library_name"] == "transformers"
    local = {**config, "source": {**config["source"], "source": "/data/models/model"}}
    assert "base_model" not in yaml.safe_load(render(local).split("---", 2)[1])  # a path is no Hub model


@pytest.mark.parametrize("record", [[], {"format": pkgio.FORMAT}])
def test_a_malformed_record_is_one_error(record, certified_gpt2):
    raw = json.loads((certified_gpt2 / "config.json").read_text())
    (certified_gpt2 / "config.json").write_text(json.dumps({**raw, "analogai": record}))
    with pytest.raises(PackageError, match="malformed 'analogai' section"):
        ad.load(certified_gpt2)
