"""Tiny Hugging Face models built from configs, saved as folders the way users have them (no network).

Text models get a real tokenizer: a byte-level BPE trained here on the built-in sentences (GPT-2 style:
an eos token and no pad token), or the MiniLM's WordPiece tokenizer for BERT.
"""
from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 400


def bpe_tokenizer(folder: Path) -> Path:
    """A GPT-2-style byte-level BPE tokenizer (eos, no pad) trained on the built-in sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from analogai_deploy.data.eval_set import SENTENCES

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return folder


def gpt2_lm(folder: Path, tokenizer: bool = True) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=64,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(folder)
    if tokenizer:
        bpe_tokenizer(folder)
    return folder


def llama_lm(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 bos_token_id=0, eos_token_id=0, pad_token_id=None)).save_pretrained(folder)
    bpe_tokenizer(folder)
    return folder


def _minilm_tokenizer(folder: Path, minilm_dir: Path) -> None:
    import shutil

    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, folder / name)


def bert_classifier(folder: Path, minilm_dir: Path, num_labels: int = 3, labels: list[str] | None = None) -> Path:
    """A 1-layer BERT sequence classifier with the MiniLM's vocabulary and tokenizer; `labels`: its id2label
    in id order (default label_0, label_1, ...)."""
    from transformers import BertConfig, BertForSequenceClassification

    names = labels or [f"label_{i}" for i in range(num_labels)]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(names),
                        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    BertForSequenceClassification(config).save_pretrained(folder)
    _minilm_tokenizer(folder, minilm_dir)
    return folder


def bert_masked_lm(folder: Path, minilm_dir: Path) -> Path:
    """A 1-layer BERT fill-mask model with the MiniLM's vocabulary and tokenizer."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    _minilm_tokenizer(folder, minilm_dir)
    return folder


def vit_classifier(folder: Path, num_labels: int = 10, size: int = 32) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    ViTForImageClassification(ViTConfig(image_size=size, patch_size=8, num_channels=3, hidden_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                        num_labels=num_labels)).save_pretrained(folder)
    return folder


def t5_seq2seq(folder: Path) -> Path:
    """A 1-layer T5 encoder-decoder (the toolkit refuses encoder-decoders; tests check how)."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    T5ForConditionalGeneration(T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                                        decoder_start_token_id=0, pad_token_id=0, eos_token_id=0)).save_pretrained(folder)
    bpe_tokenizer(folder)
    return folder


def bart_seq2seq(folder: Path, num_labels: int | None = None) -> Path:
    """A 1+1-layer BART, a text generator (or with `num_labels` BART's sequence classifier)."""
    from transformers import BartConfig, BartForConditionalGeneration, BartForSequenceClassification

    torch.manual_seed(0)
    config = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                        **({"num_labels": num_labels} if num_labels else {}))
    model = BartForSequenceClassification(config) if num_labels else BartForConditionalGeneration(config)
    model.save_pretrained(folder)
    bpe_tokenizer(folder)
    return folder
