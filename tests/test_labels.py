"""Labels are the model's, and a model's output is checked against its task (labels.py, tasks.py).

HF classifiers map string labels through their own id2label; image data and local models get names recorded
by the first stage that knows them; convert checks a classifier's output width; certify and recover check the
data's classes before any work; one task -> output kind for recover, certify and export.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import analogai_deploy as ad
from analogai_deploy import labels
from analogai_deploy.data.eval_set import load_eval_set
from analogai_deploy.metrics import run
from analogai_deploy.package import read_config

import hf_models

QUICK = ("--repeats", "2", "--times", "1d", "--json")
REVIEWS = ["The film was great.", "The meal was awful.", "A lovely trip.", "The book was poor.",
           "What a superb day.", "The service was dreadful.", "I am happy with it.", "It was sad and slow.",
           "The cat sat on the mat.", "Nothing happened at all.", "The weather is fine today.", "It rained."]


@pytest.fixture(scope="module")
def pos_neg_neu(tmp_path_factory, minilm_dir):
    """A converted BERT classifier whose id2label is {0: pos, 1: neg, 2: neu} (not sorted), and the ids its
    digital model predicts for REVIEWS."""
    from analogai_deploy.analog.convert import to_digital

    root = tmp_path_factory.mktemp("labels")
    src = hf_models.bert_classifier(root / "hf", minilm_dir, labels=["pos", "neg", "neu"])
    pkg = ad.convert(f"hf:{src}", output=root / "pkg")
    (root / "reviews.txt").write_text("\n".join(REVIEWS) + "\n")
    data = load_eval_set(pkg.path, pkg.config, f"text:{root / 'reviews.txt'}")
    predicted = run(to_digital(pkg.model).eval(), data).argmax(1).tolist()
    return root, pkg.path, predicted


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return path


def test_string_labels_map_through_the_models_id2label(pos_neg_neu, tmp_path, cli):
    root, pkg, predicted = pos_neg_neu
    names = ["pos", "neg", "neu"]
    by_name = _jsonl(tmp_path / "names.jsonl", [(t, names[i]) for t, i in zip(REVIEWS, predicted)])
    by_id = _jsonl(tmp_path / "ids.jsonl", list(zip(REVIEWS, predicted)))
    for data in (by_name, by_id):  # the digital model's own answers: 100% either way (sorted order gave 0%)
        code, out, err = cli("certify", pkg, "--data", f"text:{data}", *QUICK)
        assert code == 0, err
        cert = json.loads(out)
        assert cert["metric"] == "accuracy" and cert["digital"]["accuracy"] == 1.0
        assert cert["data"]["labels"] == names  # the certificate names the classes
    code, out, err = cli("certify", pkg, "--data", f"text:{by_name}", "--repeats", "2", "--times", "1d")
    assert code == 0 and "Classes (output order): pos, neg, neu" in out
    # recover trains the head in the model's order too
    config = read_config(pkg)
    from analogai_deploy.data import text as text_data

    ds = text_data.load(f"text:{by_name}", pkg, config)
    assert ds.labels == names and ds.num_classes == 3
    want = sorted(predicted)
    got = sorted(ds.train.tensors[-1].tolist() + ds.val.tensors[-1].tolist() + ds.test.tensors[-1].tolist())
    assert got == want


def test_a_label_the_model_does_not_know_is_a_usage_error(pos_neg_neu, tmp_path, cli):
    _, pkg, _ = pos_neg_neu
    unknown = _jsonl(tmp_path / "u.jsonl", [(t, ["pos", "negative", "neu"][i % 3]) for i, t in enumerate(REVIEWS)])
    code, _, err = cli("certify", pkg, "--data", f"text:{unknown}", *QUICK)
    assert code == 2 and "'negative' is not among the model's labels (pos, neg, neu)" in err and "bug" not in err
    code, _, err = cli("recover", pkg, "--recipe", "vanilla", "--data", f"text:{unknown}", "-o", tmp_path / "r")
    assert code == 2 and "(pos, neg, neu)" in err and not (tmp_path / "r").exists()
    out_of_range = _jsonl(tmp_path / "o.jsonl", [(t, i % 4) for i, t in enumerate(REVIEWS)])
    code, _, err = cli("certify", pkg, "--data", f"text:{out_of_range}", *QUICK)
    assert code == 2 and "label 3 is out of range: the model has 3 classes" in err


def test_the_package_and_its_card_show_the_models_labels(pos_neg_neu):
    _, pkg, _ = pos_neg_neu
    config = read_config(pkg)
    assert labels.names(config) == ["pos", "neg", "neu"]
    assert "Classes (output order): pos, neg, neu." in (pkg / "README.md").read_text()


# ---------------------------------------------------------------- images and local models

NETS = '''from torch import nn
class AuxLast(nn.Module):
    """5 class scores from forward(); an auxiliary 10-wide Linear defined last (and unused)."""
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
        self.aux = nn.Linear(64, 10)
    def forward(self, x):
        return self.body(x)
def aux_last():
    return AuxLast()
def fixed():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
def ignores(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
def rgb(num_classes=2):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, num_classes))
'''


@pytest.fixture
def nets(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


@pytest.mark.parametrize("count", ["0", "-3"])
def test_num_classes_below_one_is_a_usage_error(count, tmp_path, cli):
    code, _, err = cli("convert", "mlp", "--num-classes", count, "-o", tmp_path / "p")
    assert code == 2 and f"--num-classes {count}" in err and "at least 1" in err and "bug" not in err
    assert not (tmp_path / "p").exists()


def test_a_factory_without_num_classes_is_refused_and_the_output_width_is_checked(nets, tmp_path, cli):
    code, _, err = cli("convert", f"{nets}:fixed", "--num-classes", "10", "-o", tmp_path / "p")
    assert code == 2 and "fixed() in" in err and "takes no num_classes argument" in err
    code, _, err = cli("convert", f"{nets}:ignores", "--num-classes", "10", "-o", tmp_path / "p")
    assert code == 2 and "returns 5 class scores, not --num-classes 10" in err
    assert not (tmp_path / "p").exists()
    code, _, err = cli("convert", f"{nets}:fixed", "-o", tmp_path / "f")
    assert code == 0, err
    assert json.loads((tmp_path / "f" / "config.json").read_text())["num_classes"] == 2


def test_certify_and_recover_check_the_datas_classes_before_any_work(nets, tmp_path, cli):
    code, _, err = cli("convert", f"{nets}:aux_last", "-o", tmp_path / "p")
    assert code == 0, err
    # the class count is the output's width, not the last Linear defined (the 10-wide aux head)
    assert json.loads((tmp_path / "p" / "config.json").read_text())["num_classes"] == 5
    code, _, err = cli("certify", tmp_path / "p", "--data", "digits", *QUICK)
    assert code == 2 and "the package has 5 classes but digits has 10" in err
    code, _, err = cli("recover", tmp_path / "p", "--recipe", "vanilla", "--data", "digits", "-o", tmp_path / "r")
    assert code == 2 and "digits has 10 classes but the model has 5 outputs" in err and "bug" not in err


def _imagefolder(root: Path, classes: list[str], per_class: int = 6) -> Path:
    from PIL import Image

    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shade = (40 * k + 7 * i) % 256
            Image.new("RGB", (8, 8), (shade, 255 - shade, (shade * 3) % 256)).save(root / name / f"{i}.png")
    return root


def test_image_labels_are_recorded_by_recover_and_read_by_certify(nets, tmp_path, cli):
    train = _imagefolder(tmp_path / "pets", ["cat", "dog"])
    code, _, err = cli("convert", f"{nets}:rgb", "--input-shape", "3,8,8", "-o", tmp_path / "p")
    assert code == 0, err
    code, _, err = cli("recover", tmp_path / "p", "--recipe", "vanilla", "--data", f"imagefolder:{train}",
                       "training.rounds=1", "-o", tmp_path / "r")
    assert code == 0, err
    config = read_config(tmp_path / "r")
    assert config["labels"] == ["cat", "dog"] and labels.names(config) == ["cat", "dog"]
    assert "Classes (output order): cat, dog." in (tmp_path / "r" / "README.md").read_text()
    # another folder with only the dogs: class 0 there is the model's class 1
    dogs = _imagefolder(tmp_path / "dogs", ["dog"], per_class=8)
    data = load_eval_set(tmp_path / "r", config, f"imagefolder:{dogs}")
    assert set(data.labels.tolist()) == {1} and data.label_names == ["cat", "dog"]
    other = _imagefolder(tmp_path / "birds", ["bird", "cat"])
    code, _, err = cli("certify", tmp_path / "r", "--data", f"imagefolder:{other}", *QUICK)
    assert code == 2 and "'bird'" in err and "not among the model's labels (cat, dog)" in err


def test_digits_recovery_names_a_local_models_classes(trained_lenet):
    assert ad.load(trained_lenet).config["labels"] == [str(i) for i in range(10)]


# ---------------------------------------------------------------- one task -> output kind

def test_masked_lm_scores_every_token_in_recover_certify_and_export(minilm_dir, tmp_path, cli):
    from analogai_deploy.exporter.graph import wrap
    from analogai_deploy.recovery import objectives
    from analogai_deploy.recovery.recipe import load as load_recipe
    from analogai_deploy.tasks import output_kind

    src = hf_models.bert_masked_lm(tmp_path / "hf", minilm_dir)
    pkg = ad.convert(f"hf:{src}", output=tmp_path / "p")
    assert pkg.config["task"] == "masked-lm" and output_kind(pkg.config) == "tokens"
    code, out, err = cli("certify", pkg.path, "--data", "sentences", *QUICK)
    assert code == 0, err
    cert = json.loads(out)
    assert cert["metric"] == "agreement" and cert["digital"]["agreement"] == 1.0  # per token, not a pooled cosine
    data = load_eval_set(pkg.path, pkg.config, "sentences")
    assert data.kind == "tokens" and data.token_mask.shape == (data.n, 32)
    rec = load_recipe("vanilla", [], text=True)
    objective = objectives.choose(pkg.config, type("D", (), {"labelled": False, "spec": "corpus"})(), rec)
    assert objective.output == "tokens" and objective.name == "kl" and objective.metric == "agreement"
    assert wrap(pkg.model, pkg.config)[2] == "logits"
