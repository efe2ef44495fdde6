"""The package's label names: which class each output of a classifier is.

A Hugging Face classifier carries its names in its own config (id2label / label2id): they are the truth,
and a dataset's string labels map through them, whatever order the file lists them in. Other models (built-in,
torchvision, local code) and heads transformers made up (LABEL_0, LABEL_1, ...: no names yet) get theirs from
the first stage that knows them: recover writes the training data's names into the package (`record`), into
the Hugging Face config's id2label for HF models, else into config.json["labels"]. Every later stage reads
them here (`names`).
"""
from __future__ import annotations

from typing import Any

import torch

from .errors import UsageError
from .tasks import output_kind

MAX_SHOWN = 12  # names listed in a message before "..."


def _hf_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """The transformers config the package carries (None for other sources)."""
    source = config.get("source") or {}
    return source.get("config") if source.get("kind") == "huggingface" else None


def is_classifier(config: dict[str, Any]) -> bool:
    """One class score per input: the package's outputs have names to map labels through."""
    return output_kind(config) == "logits"


def names(config: dict[str, Any]) -> list[str] | None:
    """The label names in output order, or None where no stage has named them yet."""
    hf = _hf_config(config)
    if hf is not None:
        id2label = hf.get("id2label") or {}
        got = [id2label.get(str(i), id2label.get(i)) for i in range(len(id2label))]  # JSON keys are strings
        if not got or any(n is None for n in got) or all(n == f"LABEL_{i}" for i, n in enumerate(got)):
            return None  # transformers' placeholders: the head's classes are not named
        return [str(n) for n in got]
    recorded = config.get("labels")
    return [str(n) for n in recorded] if recorded else None


def shown(label_names: list[str]) -> str:
    """The names for a message: 'pos, neg, neu' (the first MAX_SHOWN)."""
    more = f", ... ({len(label_names)} in all)" if len(label_names) > MAX_SHOWN else ""
    return ", ".join(label_names[:MAX_SHOWN]) + more


def record(config: dict[str, Any], data_names: list[str] | None) -> dict[str, Any]:
    """`config` with the data's label names written where the package keeps them, when it has none yet
    (the first stage that knows them); a package that has names keeps them (the data was mapped through them)."""
    if not data_names or names(config) is not None or not is_classifier(config):
        return config
    if len(data_names) != config.get("num_classes"):
        return config  # fewer classes in the data than outputs: the rest stay unnamed
    out = dict(config)
    hf = _hf_config(config)
    if hf is not None:
        out["source"] = {**config["source"], "config": {**hf, "id2label": {str(i): n for i, n in enumerate(data_names)},
                                                        "label2id": {n: i for i, n in enumerate(data_names)}}}
    else:
        out["labels"] = list(data_names)
    return out


def _is_int(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and v.strip().lstrip("-").isdigit())


def ids(raw: list[Any], config: dict[str, Any] | None, spec: str) -> tuple[torch.Tensor, list[str] | None, int]:
    """(label ids, label names in id order, number of classes) for a dataset's labels.

    A classifier package with names: string labels map through them (a name it does not know is a usage error
    naming its labels). Integer labels are ids, checked against the package's number of classes. Without names
    (an unnamed head, or no package): string labels are numbered in sorted order, names kept.
    """
    known = names(config) if config is not None and is_classifier(config) else None
    classes = config.get("num_classes") if config is not None and is_classifier(config) else None
    strings = [str(v) for v in raw]
    if known is not None and all(isinstance(v, str) for v in raw) and set(strings) <= set(known):
        index = {n: i for i, n in enumerate(known)}
        return torch.tensor([index[s] for s in strings]), known, len(known)
    if all(_is_int(v) for v in raw):
        got = [int(v) for v in raw]
        if min(got) < 0:
            raise UsageError(f"{spec}: labels must be >= 0 (found {min(got)})", "number the classes 0 ... C-1")
        if classes and max(got) >= classes:
            what = f" ({shown(known)})" if known else ""
            raise UsageError(f"{spec}: label {max(got)} is out of range: the model has {classes} classes, ids 0 ... "
                             f"{classes - 1}{what}", "label with the model's class ids, or convert with `num_classes`")
        return torch.tensor(got), known, classes or max(got) + 1
    if known is not None:
        unknown = sorted(set(strings) - set(known))
        raise UsageError(f"{spec}: label{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown[:5]))} "
                         f"{'are' if len(unknown) > 1 else 'is'} not among the model's labels ({shown(known)})",
                         "use the model's label names (or their ids 0 ... "
                         f"{len(known) - 1}); its config.json id2label / labels lists them")
    found = sorted(set(strings))
    if classes and len(found) > classes:
        raise UsageError(f"{spec} has {len(found)} label names ({shown(found)}) but the model has {classes} classes",
                         f"convert the model with `num_classes={len(found)}`")
    index = {n: i for i, n in enumerate(found)}
    return torch.tensor([index[s] for s in strings]), found, classes or len(found)


def align(data, config: dict[str, Any]):
    """An image dataset (data.Data) with its classes numbered as the package numbers them: through the package's
    label names where both have names (a class the package does not know is a usage error naming its labels)."""
    known = names(config) if is_classifier(config) else None
    if known is None or not data.labels or list(data.labels) == known:
        return data
    unknown = [n for n in data.labels if n not in known]
    if unknown:
        raise UsageError(f"{data.spec} has classes {', '.join(map(repr, unknown[:5]))} that are not among the model's "
                         f"labels ({shown(known)})", "certify / recover on data with the model's classes")
    index = {n: i for i, n in enumerate(known)}
    return data.relabel([index[n] for n in data.labels], known)
