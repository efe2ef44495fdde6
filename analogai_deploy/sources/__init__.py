"""Where models come from, resolved from one string.

    lenet, mlp                 small built-in models for the bundled digits data
    resnet18                   a torchvision classification builder
    hf:ID_OR_DIR               a Hugging Face model (a local folder, or a hub id when online / cached)
    path/to/file.py:factory    a local Python factory function

Every source returns a `Source` (source.py): the built digital model plus the recipe to rebuild it
(`spec`), which the package stores so `load` can rebuild the architecture without the original.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UsageError, closest
from ..metrics import primary_output
from .source import Source, example_input, parse_shape


def resolve(
    spec: str,
    *,
    num_classes: int | None = None,
    weights: str | None = None,
    task: str | None = None,
    input_shape: list[int] | str | None = None,
    tokenizer: str | None = None,
) -> Source:
    """Build the digital model named by `spec` (see module docstring). `input_shape`: C,H,W, a list or a
    string ("3,32,32")."""
    from . import builtin, huggingface, local, torchvision_models

    spec = spec.strip()
    input_shape = parse_shape(input_shape)
    if num_classes is not None and int(num_classes) < 1:
        raise UsageError(f"`num_classes={num_classes}`: a classifier needs at least 1 class",
                         "pass the number of classes of your data (e.g. `num_classes=10` for digits), or drop it")
    if spec.startswith("hf:") or spec.startswith("hf-hub:"):
        return huggingface.build(spec.split(":", 1)[1], task=task, num_classes=num_classes, weights=weights,
                                 tokenizer=tokenizer, input_shape=input_shape)
    if task or tokenizer:
        flag = "`task`" if task else "`tokenizer`"
        raise UsageError(f"{flag} is for Hugging Face models (hf:ID_OR_DIR); {spec} is not one", f"drop {flag}")
    if ".py:" in spec or spec.endswith(".py"):
        return local.build(spec, num_classes=num_classes, weights=weights, input_shape=input_shape)
    if spec in builtin.names():
        return builtin.build(spec, num_classes=num_classes, weights=weights, input_shape=input_shape)
    if spec in torchvision_models.names():
        return torchvision_models.build(spec, num_classes=num_classes, weights=weights, input_shape=input_shape)
    hint = closest(spec, builtin.names() + torchvision_models.names())
    raise UsageError(
        f"unknown model {spec!r}",
        (hint + " " if hint else "")
        + "use a torchvision name (see `analogai-deploy models`), hf:ID_OR_DIR, or path/to/file.py:factory",
    )


def check_runs(src: Source, name: str, num_classes: int | None = None) -> None:
    """One forward pass at the input spec the package will record; a model that does not run is refused now,
    not at recover / export / certify. Errors raised in the user's own model file name its line.

    A classifier's output is checked against the task: one row of class scores per input (one per token for
    token-classification) whose width is `num_classes` and the Hugging Face head's num_labels;
    `src.num_classes` becomes that width, the count every later stage checks data against."""
    import torch

    args, kwargs = example_input(src.input)
    try:
        with torch.no_grad():
            out = src.model.eval()(*args, **kwargs)
    except Exception as exc:  # any failure of the user's model at this input is a usage problem
        if src.spec.get("kind") == "local":
            from pathlib import Path

            from .local import user_error

            err = user_error(exc, Path(src.spec["file"]), "running the model's forward pass")
            if err is not None:
                raise err from None
        message = (str(exc).splitlines() or [""])[0][:300]
        if src.input.get("kind") == "image":
            shape = "x".join(map(str, src.input["shape"]))
            raise UsageError(f"{name} does not run on {shape} inputs: {type(exc).__name__}: {message}",
                             "pass `input_shape=C,H,W` with a size this model takes") from None
        raise UsageError(f"{name} does not run on its text inputs ({', '.join(kwargs)}): {type(exc).__name__}: "
                         f"{message}") from None
    if src.task.endswith("classification"):
        src.num_classes = _output_width(src, name, out, num_classes)


def _output_width(src: Source, name: str, out, num_classes: int | None) -> int:
    """The number of classes a classifier's trial output has, checked against what it should have."""
    try:
        scores = primary_output(out)
    except UsageError:
        scores = None
    rank = 3 if src.task == "token-classification" else 2
    if scores is None or scores.dim() != rank:
        got = f"shape {tuple(scores.shape)}" if scores is not None else type(out).__name__
        want = "(batch, tokens, classes)" if rank == 3 else "(batch, classes)"
        raise UsageError(f"{name} returns {got}; a classifier ({src.task}) returns {want} scores",
                         "return the class scores (logits) from forward()")
    width = int(scores.shape[-1])
    head = getattr(getattr(src.model, "config", None), "num_labels", None) if src.spec.get("kind") == "huggingface" \
        else None
    if head is not None and width != head:
        raise UsageError(f"{name} returns {width} class scores but its config's num_labels is {head}",
                         "fix the model's config (num_labels / id2label) to match its classification head")
    if num_classes is not None and width != int(num_classes):
        raise UsageError(f"{name} returns {width} class scores, not `num_classes={num_classes}`",
                         f"pass `num_classes={width}`, or make the model's output layer {num_classes} wide")
    return width


def rebuild(spec: dict[str, Any]) -> nn.Module:
    """The architecture recorded in a package (no weights: those come from model.safetensors)."""
    from . import builtin, huggingface, local, torchvision_models

    kind = spec.get("kind")
    builders = {"builtin": builtin.rebuild, "torchvision": torchvision_models.rebuild,
                "huggingface": huggingface.rebuild, "local": local.rebuild}
    if kind not in builders:
        raise UsageError(f"package names an unknown model source kind {kind!r}", f"known: {', '.join(builders)}")
    return builders[kind](spec)
