"""Hugging Face models through the transformers Auto classes, offline from a local folder or the cache."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UsageError
from . import Source

TASKS = {
    "feature-extraction": "AutoModel",
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "image-classification": "AutoModelForImageClassification",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
}
DEFAULT_SEQ_LEN = 32


def _auto(task: str):
    import transformers

    if task not in TASKS:
        from ..errors import unknown

        raise unknown("Hugging Face task", task, TASKS)
    return getattr(transformers, TASKS[task])


def build(id_or_dir: str, *, task: str | None, num_classes: int | None, weights: str | None) -> Source:
    import transformers

    task = task or "feature-extraction"
    auto = _auto(task)
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_labels"] = int(num_classes)
    try:
        model = auto.from_pretrained(id_or_dir, **kwargs)
    except OSError as exc:
        where = "folder" if Path(id_or_dir).exists() else "hub id (no network here, and not in the local cache)"
        raise UsageError(
            f"cannot load Hugging Face model {id_or_dir!r} from this {where}: {str(exc).splitlines()[0]}",
            "pass hf:/path/to/folder holding config.json and the weights",
        ) from None
    if weights:
        from . import weights as weights_io

        weights_io.apply(model, weights)
    model.eval()
    extra: dict[str, bytes] = {}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(id_or_dir)
    except Exception:  # image models and bare checkpoints have none
        tokenizer = None
    if tokenizer is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            tokenizer.save_pretrained(tmp)
            for f in Path(tmp).iterdir():
                if f.is_file() and f.suffix in (".json", ".txt", ".model"):
                    extra[f.name] = f.read_bytes()
    config = model.config
    spec = {
        "kind": "huggingface",
        "source": id_or_dir if not Path(id_or_dir).exists() else str(Path(id_or_dir).resolve()),
        "task": task,
        "config": config.to_dict(),
    }
    if task == "image-classification":
        size = getattr(config, "image_size", 224)
        channels = getattr(config, "num_channels", 3)
        inputs = {"kind": "image", "shape": [channels, size, size], "names": ["pixel_values"]}
    else:
        names = ["input_ids", "attention_mask"]
        if getattr(config, "type_vocab_size", 0):
            names.append("token_type_ids")
        inputs = {"kind": "text", "names": names, "seq_len": DEFAULT_SEQ_LEN, "vocab_size": config.vocab_size}
    num_labels = config.num_labels if task.endswith("classification") else None
    return Source(model, spec, task, inputs, num_labels, extra)


def rebuild(spec: dict[str, Any]) -> nn.Module:
    import transformers

    cfg = dict(spec["config"])
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise UsageError("package's Hugging Face config has no model_type")
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    return _auto(spec.get("task", "feature-extraction")).from_config(config).eval()
