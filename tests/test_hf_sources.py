"""Hugging Face sources: the task from config.architectures, strict weights, real tokenizers."""
from __future__ import annotations


import pytest
import torch

import analogai_deploy as ad
from analogai_deploy.analog.placement import Placement
from analogai_deploy.errors import UsageError
from analogai_deploy.package import read_config

import hf_models


@pytest.fixture(scope="module")
def folders(tmp_path_factory, minilm_dir):
    root = tmp_path_factory.mktemp("hf")
    return {
        "bert_cls": hf_models.bert_classifier(root / "bert_cls", minilm_dir),
        "gpt2": hf_models.gpt2_lm(root / "gpt2"),
        "gpt2_bare": hf_models.gpt2_lm(root / "gpt2_bare", tokenizer=False),
    }


def _config(path):
    return read_config(path)


def test_sequence_classifier_keeps_its_head_and_labels(folders, tmp_path):
    from transformers import AutoModelForSequenceClassification

    pkg = ad.convert(f"hf:{folders['bert_cls']}", output=tmp_path / "p")
    config = _config(tmp_path / "p")
    assert config["task"] == "sequence-classification" and config["num_classes"] == 3
    assert config["source"]["architecture"] == "BertForSequenceClassification"
    assert config["source"]["config"]["id2label"]["2"] == "label_2"
    assert "classifier" in pkg.placement.names
    ref = AutoModelForSequenceClassification.from_pretrained(folders["bert_cls"]).eval()
    ids = torch.randint(1000, 5000, (2, 7))
    with torch.no_grad():
        assert ad.load(tmp_path / "p").model(input_ids=ids).logits.equal(ref(input_ids=ids).logits)
    with pytest.raises(UsageError, match="not used by BertModel") as err:  # the head would be dropped
        ad.convert(f"hf:{folders['bert_cls']}", output=tmp_path / "q", task="feature-extraction")
    assert "`task=sequence-classification`" in err.value.hint


def test_gpt2_lm_is_a_causal_lm_with_eos_as_pad(folders, tmp_path):
    ad.convert(f"hf:{folders['gpt2']}", output=tmp_path / "p")
    config = _config(tmp_path / "p")
    assert config["task"] == "causal-lm" and config["source"]["architecture"] == "GPT2LMHeadModel"
    tok = config["tokenizer"]
    assert (tok["pad_token"], tok["pad_token_from"], tok["padding_side"]) == ("<|endoftext|>", "eos", "right")
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "p").pad_token == "<|endoftext|>"  # shipped with the pad
    kinds = {e.kind for e in Placement.from_config(config).analog}
    assert kinds == {"hf_conv1d", "linear"}
    assert ad.convert(f"hf:{folders['gpt2']}", output=tmp_path / "q", task="text-generation").config["task"] == "causal-lm"
    with pytest.raises(UsageError, match="unknown Hugging Face task") as err:
        ad.convert(f"hf:{folders['gpt2']}", output=tmp_path / "r", task="text-generatoin")
    assert "text-generation" in err.value.hint


def test_a_folder_without_a_tokenizer_is_refused_unless_one_is_given(folders, tmp_path):
    with pytest.raises(UsageError, match="no tokenizer files") as err:
        ad.convert(f"hf:{folders['gpt2_bare']}", output=tmp_path / "p")
    assert "`tokenizer=PATH`" in err.value.hint
    assert not (tmp_path / "p").exists()
    pkg = ad.convert(f"hf:{folders['gpt2_bare']}", output=tmp_path / "p", tokenizer=str(folders["gpt2"]))
    assert pkg.config["tokenizer"]["source"] == str(folders["gpt2"].resolve())
    assert (tmp_path / "p" / "tokenizer.json").exists()
    with pytest.raises(UsageError, match="for Hugging Face models"):
        ad.convert("lenet", output=tmp_path / "l", tokenizer=str(folders["gpt2"]))


def test_a_missing_folder_is_folder_not_found_not_a_hub_id_rule(cli, tmp_path):
    for spec in (tmp_path / "missing" / "folder", "./missing-folder", "a/b/c"):
        code, _, err = cli("convert", f"hf:{spec}", "-o", tmp_path / "p")
        assert code == 2 and f"folder not found: {spec}" in err and "Repo id" not in err


def test_rmsnorm_is_listed_as_a_normalisation_layer(cli, tmp_path):
    from torch import nn

    from analogai_deploy.analog.placement import NORM, plan

    code, out, err = cli("convert", f"hf:{hf_models.llama_lm(tmp_path / 'llama')}", "-o", tmp_path / "p")
    assert code == 0, err
    assert f"LlamaRMSNorm x5 - {NORM}" in out and "RMSNorm x5 - no analog layer" not in out
    assert {e.reason for e in plan(nn.Sequential(nn.Linear(4, 4), nn.RMSNorm(4))).digital} == {NORM}


@pytest.mark.parametrize("build, arch, tasks", [
    (lambda d: hf_models.t5_seq2seq(d), "T5ForConditionalGeneration", [[], ["--task", "feature-extraction"]]),
    (lambda d: hf_models.bart_seq2seq(d), "BartForConditionalGeneration", [[], ["--task", "causal-lm"]]),
    (lambda d: hf_models.bart_seq2seq(d, num_labels=2), "BartForSequenceClassification", [[]]),
])
def test_encoder_decoders_are_refused_naming_what_converts(cli, tmp_path, build, arch, tasks):
    # were: T5 "You must specify exactly one of input_ids or inputs_embeds"; BART failed differently for every task
    folder = build(tmp_path / "m")
    for task in tasks:
        code, _, err = cli("convert", f"hf:{folder}", *task, "-o", tmp_path / "p")
        assert code == 2 and err.count("error:") == 1, err
        assert f"is an encoder-decoder model ({arch}), which this toolkit does not convert" in err
        assert "encoder-only models (feature-extraction" in err and "decoder-only causal LMs" in err
        assert not (tmp_path / "p").exists()
