"""Hugging Face models through the transformers Auto classes, offline from a local folder or the cache.

The task comes from the folder's config.json `architectures` (BertForSequenceClassification ->
sequence-classification with its head and labels, GPT2LMHeadModel / LlamaForCausalLM -> causal-lm,
ViTForImageClassification -> image-classification, BertModel -> feature-extraction); `task`
overrides it. Loading is strict: checkpoint weights the chosen class does not load are an error (they
would be dropped), and so are weights it lacks, unless the user chose a task whose new head is then
initialised (recorded in config.json["source"]["initialised"]).

Text models need a real tokenizer: the folder's own tokenizer files, or `tokenizer=PATH`. A tokenizer
without a pad token pads with its eos token (as transformers users do for GPT-2 / Llama); the pad
token, where it came from and the padding side are recorded in config.json["tokenizer"].
"""
from __future__ import annotations

import functools
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UsageError, unknown
from .source import Source

TASKS = {
    "feature-extraction": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "image-classification": "AutoModelForImageClassification",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
}
#: the transformers pipeline names users also type
ALIASES = {"text-generation": "causal-lm", "text-classification": "sequence-classification", "fill-mask": "masked-lm"}
#: config.architectures suffix -> task (first match wins: "LMHeadModel" before "Model")
_ARCHITECTURES = (
    ("ForSequenceClassification", "sequence-classification"), ("ForTokenClassification", "token-classification"),
    ("ForImageClassification", "image-classification"), ("ForCausalLM", "causal-lm"), ("LMHeadModel", "causal-lm"),
    ("ForMaskedLM", "masked-lm"), ("Model", "feature-extraction"),
)
#: files that hold a tokenizer's vocabulary (tokenizer_config.json alone makes transformers invent one)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")
DEFAULT_SEQ_LEN = 32
#: an image model's preprocessing (resize, normalise), shipped as it is so that the package works in
#: pipeline("image-classification", model=PKG) like its source (plain JSON: nothing in it is run)
PROCESSOR = "preprocessor_config.json"


def task_name(task: str) -> str:
    """The canonical task for `task` (aliases accepted); unknown names list the accepted ones."""
    task = ALIASES.get(task, task)
    if task not in TASKS:
        raise unknown("Hugging Face task", task, [*TASKS, *ALIASES])
    return task


def task_of(config: Any) -> tuple[str | None, str | None]:
    """(task, architecture) from a config's `architectures`; (None, None) when it names none we know."""
    for arch in getattr(config, "architectures", None) or []:
        for suffix, task in _ARCHITECTURES:
            if arch.endswith(suffix):
                return task, arch
    return None, None


@contextmanager
def _quiet():
    """transformers' own load report and progress bars off: what matters is raised as one-line errors here."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    gguf_utils = sys.modules.get("transformers.modeling_gguf_pytorch_utils")
    gguf_bar = getattr(gguf_utils, "tqdm", None)
    if gguf_bar is not None:  # its dequantisation bar is a bare tqdm that the switch above does not reach
        gguf_utils.tqdm = functools.partial(gguf_bar, disable=True)
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
        if gguf_bar is not None:
            gguf_utils.tqdm = gguf_bar


def _auto(task: str):
    import transformers

    return getattr(transformers, TASKS[task_name(task)])


def _where(id_or_dir: str) -> str:
    return "folder" if Path(id_or_dir).exists() else "hub id (no network here, and not in the local cache)"


def _config(id_or_dir: str, gguf: dict[str, str] | None = None):
    import transformers

    # a Hub id is NAME or OWNER/NAME; anything else is a folder, and a missing folder is not a bad Hub id
    if (id_or_dir.startswith(("/", ".", "~")) or id_or_dir.count("/") > 1) and not Path(id_or_dir).exists():
        raise UsageError(f"folder not found: {id_or_dir}",
                         "pass hf:/path/to/folder holding config.json and the weights, or a Hub id OWNER/NAME")
    try:
        with _quiet():
            return transformers.AutoConfig.from_pretrained(id_or_dir, **(gguf or {}))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load Hugging Face model {id_or_dir!r} from this {_where(id_or_dir)}: "
                         f"{str(exc).splitlines()[0]}", "pass hf:/path/to/folder holding config.json and the weights") from None


def _refuse_encoder_decoder(config: Any, source: str) -> None:
    """T5, BART, Marian, ... take decoder inputs too; nothing here feeds, exports or scores them, for any task."""
    if getattr(config, "is_encoder_decoder", False):
        arch = (getattr(config, "architectures", None) or [config.model_type])[0]
        raise UsageError(f"hf:{source} is an encoder-decoder model ({arch}), which this toolkit does not convert; it "
                         "converts encoder-only models (feature-extraction, sequence-classification, "
                         "token-classification, masked-lm), decoder-only causal LMs and image classifiers",
                         "pick an encoder-only (BERT-like) or decoder-only (GPT-2-, Llama-like) checkpoint")


def _choose_task(task: str | None, num_classes: int | None, inferred: str | None) -> tuple[str, bool]:
    """(task, chosen by the user?)."""
    if task:
        return task_name(task), True
    if num_classes is not None:  # a classifier was asked for: keep the folder's kind of classifier if it is one
        return (inferred if inferred and inferred.endswith("classification") else "sequence-classification"), True
    return inferred or "feature-extraction", False


def _load(id_or_dir: str, task: str, chosen: bool, num_classes: int | None, inferred: str | None,
          arch: str | None, gguf: dict[str, str] | None = None) -> tuple[nn.Module, list[str]]:
    kwargs: dict[str, Any] = {"output_loading_info": True, **(gguf or {})}
    if num_classes is not None:
        kwargs["num_labels"] = int(num_classes)
    try:
        with _quiet():
            model, info = _auto(task).from_pretrained(id_or_dir, **kwargs)
    except OSError as exc:
        raise UsageError(f"cannot load Hugging Face model {id_or_dir!r} from this {_where(id_or_dir)}: "
                         f"{str(exc).splitlines()[0]}", "pass hf:/path/to/folder holding config.json and the weights") from None
    except ValueError as exc:  # e.g. this architecture has no class for the task
        raise UsageError(f"{id_or_dir} cannot be loaded for {task}: {str(exc).splitlines()[0]}",
                         f"pass `task={inferred}`" if inferred else "pass another `task`") from None
    except RuntimeError as exc:  # size mismatches: a head with another number of labels
        if "mismatch" not in str(exc):
            raise
        raise UsageError(f"the checkpoint's head in {id_or_dir} does not fit `num_classes={num_classes}`",
                         "drop `num_classes` to keep the trained head (and its labels)") from None
    cls = type(model).__name__
    unexpected = sorted(info.get("unexpected_keys") or [])
    if unexpected:
        raise UsageError(
            f"{len(unexpected)} weights in {id_or_dir} are not used by {cls} (e.g. {unexpected[0]}); "
            f"the folder holds a {arch or 'different model'}, and they would be dropped",
            f"pass `task={inferred}` (or drop `task`)" if inferred and inferred != task else "check `task`")
    missing = sorted(info.get("missing_keys") or []) + sorted(str(k[0]) if isinstance(k, tuple) else str(k)
                                                              for k in info.get("mismatched_keys") or [])
    if missing and not chosen:
        raise UsageError(f"{len(missing)} weights of {cls} are not in {id_or_dir} (e.g. {missing[0]}): "
                         "the checkpoint is incomplete", "convert a complete folder, or pass `task` to start a new head")
    return model, missing


def _tokenizer_folder(id_or_dir: str, tokenizer: str | None) -> str | None:
    if tokenizer:
        if not Path(tokenizer).is_dir() or not any((Path(tokenizer) / f).exists() for f in TOKENIZER_FILES):
            raise UsageError(f"`tokenizer={tokenizer}` is not a folder with tokenizer files",
                             f"pass a folder holding one of {', '.join(TOKENIZER_FILES)}")
        return tokenizer
    if Path(id_or_dir).is_dir():
        return id_or_dir if any((Path(id_or_dir) / f).exists() for f in TOKENIZER_FILES) else None
    return id_or_dir  # a hub id: its cached snapshot, if it has one


def _tokenizer(id_or_dir: str, tokenizer: str | None, model: nn.Module, gguf: dict[str, str] | None = None
               ) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The tokenizer files to ship and config.json["tokenizer"]; refuses a folder without a real tokenizer."""
    import transformers

    folder = _tokenizer_folder(id_or_dir, tokenizer)
    if gguf and not tokenizer:
        folder = id_or_dir  # a GGUF file carries its tokenizer
    else:
        gguf = None
    fix = "pass `tokenizer=PATH` (a folder with the tokenizer the model was trained with)"
    if folder is None:
        raise UsageError(f"{id_or_dir} holds no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)", fix)
    try:
        with _quiet():
            tok = transformers.AutoTokenizer.from_pretrained(folder, **(gguf or {}))
    except Exception as exc:  # transformers raises many types for broken tokenizer folders
        raise UsageError(f"cannot load the tokenizer in {folder}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                         fix) from None
    specials = set(tok.all_special_ids)
    ids = tok("The cat sat on the mat.", add_special_tokens=False)["input_ids"]
    if len(tok) <= len(specials) + 1 or not ids or all(i in specials for i in ids):
        raise UsageError(f"the tokenizer in {folder} has no real vocabulary ({len(tok)} tokens)", fix)
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab and len(tok) > vocab:
        raise UsageError(f"the tokenizer in {folder} has {len(tok)} tokens but the model's vocabulary is {vocab}",
                         "use the tokenizer the model was trained with (`tokenizer=PATH`)")
    pad_from = "tokenizer"
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise UsageError(f"the tokenizer in {folder} has neither a pad nor an eos token, so batches cannot be "
                             "padded", "give it a pad token (tokenizer.pad_token = ...; save_pretrained) first")
        tok.pad_token, pad_from = tok.eos_token, "eos"
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id  # sequence classifiers find the last real token with it
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        for f in Path(tmp).iterdir():
            if f.is_file() and f.suffix in (".json", ".txt", ".model"):
                files[f.name] = f.read_bytes()
    record = {"source": str(Path(folder).resolve()) if Path(folder).exists() else folder,
              "class": type(tok).__name__, "vocab_size": len(tok), "pad_token": tok.pad_token,
              "pad_token_id": tok.pad_token_id, "pad_token_from": pad_from, "padding_side": tok.padding_side}
    return files, record


def _gguf(id_or_dir: str) -> tuple[str, dict[str, str] | None]:
    """FOLDER/NAME.gguf -> (FOLDER, {"gguf_file": NAME}): transformers dequantises a GGUF checkpoint (llama.cpp's
    format) into an ordinary model; the package then stores it as its own safetensors (save_pretrained refuses
    GGUF-loaded models, and nothing here needs it)."""
    if not id_or_dir.lower().endswith(".gguf"):
        return id_or_dir, None
    path = Path(id_or_dir)
    if not path.is_file():
        raise UsageError(f"GGUF file not found: {id_or_dir}", "pass hf:/path/to/model.gguf")
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files with it)
    except ImportError:
        raise UsageError("reading a .gguf file needs the gguf package", "pip install gguf (make install has it)") from None
    import transformers.modeling_gguf_pytorch_utils  # noqa: F401  (loaded now, so _quiet can silence its bar)

    return str(path.parent), {"gguf_file": path.name}


def build(id_or_dir: str, *, task: str | None, num_classes: int | None, weights: str | None,
          tokenizer: str | None = None, input_shape: list[int] | None = None) -> Source:
    source = id_or_dir
    id_or_dir, gguf = _gguf(id_or_dir)
    config = _config(id_or_dir, gguf)
    _refuse_encoder_decoder(config, source)
    inferred, arch = task_of(config)
    if gguf and inferred is None:  # GGUF checkpoints are language models; their config may name no head
        inferred = "causal-lm"
    task, chosen = _choose_task(task, num_classes, inferred)
    model, initialised = _load(id_or_dir, task, chosen, num_classes, inferred, arch, gguf)
    if weights:
        from . import weights as weights_io

        weights_io.apply(model, weights)
    model.eval()
    files: dict[str, bytes] = {}
    tok_record = None
    if task != "image-classification":
        files, tok_record = _tokenizer(id_or_dir, tokenizer, model, gguf)
    elif tokenizer:
        raise UsageError("`tokenizer` is for text models; this is an image classifier", "drop `tokenizer`")
    elif (Path(id_or_dir) / PROCESSOR).is_file():
        files[PROCESSOR] = (Path(id_or_dir) / PROCESSOR).read_bytes()
    config = model.config
    config.architectures = [type(model).__name__]  # the class it is now (a new head too): what loaders pick
    spec: dict[str, Any] = {
        "kind": "huggingface",
        "source": source if not Path(source).exists() else str(Path(source).resolve()),
        "task": task,
        "architecture": type(model).__name__,
        "config": config.to_dict(),
    }
    if initialised:
        spec["initialised"] = initialised[:20]
        spec["initialised_count"] = len(initialised)
    if task == "image-classification":
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else int(size[0])
        channels = getattr(config, "num_channels", 3)
        shape = [channels, size, size]
        if input_shape and list(input_shape) != shape:  # the config fixes the size (ViT: the patch grid)
            raise UsageError(f"{id_or_dir} takes {'x'.join(map(str, shape))} images (its config's image_size), "
                             f"not {'x'.join(map(str, input_shape))}", f"drop `input_shape` or pass {','.join(map(str, shape))}")
        inputs = {"kind": "image", "shape": shape, "names": ["pixel_values"]}
    else:
        if input_shape:
            raise UsageError("`input_shape` is for image models; a text model takes token ids", "drop `input_shape`")
        names = ["input_ids", "attention_mask"]
        if getattr(config, "type_vocab_size", 0):
            names.append("token_type_ids")
        inputs = {"kind": "text", "names": names, "seq_len": DEFAULT_SEQ_LEN, "vocab_size": config.vocab_size}
    num_labels = config.num_labels if task.endswith("classification") else None
    return Source(model, spec, task, inputs, num_labels, files, tok_record)


def rebuild(spec: dict[str, Any]) -> nn.Module:
    import transformers

    cfg = dict(spec["config"])
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise UsageError("package's Hugging Face config has no model_type")
    with _quiet():
        config = transformers.AutoConfig.for_model(model_type, **cfg)
        return _auto(spec.get("task", "feature-extraction")).from_config(config).eval()
