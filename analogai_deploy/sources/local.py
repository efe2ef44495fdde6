"""A model from the user's own code: `path/to/file.py:factory` (trusted, local: it runs that file)."""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
from pathlib import Path
import traceback
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..provenance import sha256_file
from . import weights as weights_io
from .source import Source


def _split(spec: str) -> tuple[Path, str]:
    file, _, factory = spec.rpartition(":") if spec.count(":") and not spec.endswith(".py") else (spec, "", "")
    if not factory:
        raise UsageError(f"{spec!r} names no factory function", "write path/to/file.py:factory")
    return Path(file), factory


def user_error(exc: BaseException, file: Path, doing: str) -> UsageError | None:
    """The user's own code raised `exc`: a usage error naming their file, line and message (None when the
    traceback never passes through `file`, i.e. the error is not theirs)."""
    target = str(file.resolve())
    line = None
    if isinstance(exc, SyntaxError) and exc.filename and str(Path(exc.filename).resolve()) == target:
        line = exc.lineno
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename and str(Path(frame.filename).resolve()) == target:
            line = frame.lineno  # the deepest line of theirs
    if line is None:
        return None
    message = str(exc).splitlines()[0] if str(exc) else ""
    return UsageError(f"{file}:{line}: {type(exc).__name__}{': ' + message if message else ''} (while {doing})",
                      "the error is in your model code: fix it and convert again")


def _factory(file: Path, name: str):
    if not file.is_file():
        raise UsageError(f"model file not found: {file}", "check the path before ':factory'")
    mod_name = "analogai_user_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # their file, their error: say where
        err = user_error(exc, file, f"importing {file.name}")
        if err is None:
            raise
        raise err from None
    fn = getattr(module, name, None)
    if not callable(fn):
        from ..errors import unknown

        raise unknown(f"factory in {file}", name, [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")])
    return fn


def _call(fn, kwargs: dict[str, Any], file: Path) -> nn.Module:
    params = inspect.signature(fn).parameters
    accepted = {k: v for k, v in kwargs.items() if k in params or any(p.kind == p.VAR_KEYWORD for p in params.values())}
    try:
        model = fn(**accepted)
    except Exception as exc:
        err = user_error(exc, file, f"calling {fn.__name__}()")
        if err is None:
            raise
        raise err from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build(spec: str, *, num_classes=None, weights=None, input_shape=None) -> Source:
    file, name = _split(spec)
    kwargs = {"num_classes": int(num_classes)} if num_classes is not None else {}
    fn = _factory(file, name)
    params = inspect.signature(fn).parameters
    if kwargs and "num_classes" not in params and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        raise UsageError(f"{name}() in {file} takes no num_classes argument, so `num_classes={num_classes}` cannot "
                         "reach the model", f"add a num_classes parameter to {name}(), or drop `num_classes` "
                         "(the class count is read from the model's output)")
    model = _call(fn, kwargs, file)
    if weights:
        weights_io.apply(model, weights)
    first = next((m for m in model.modules() if isinstance(m, _FIRST_LAYERS)), None)
    if isinstance(first, (nn.Embedding, nn.EmbeddingBag)):  # any input_shape would feed it floats
        raise UsageError(f"the model in {file} takes token ids (its first layer is {type(first).__name__}); "
                         "a local model takes float image tensors C,H,W",
                         "convert a text model from a Hugging Face folder (hf:FOLDER, with its tokenizer)")
    given = input_shape or getattr(fn, "input_shape", None) or getattr(model, "input_shape", None)
    shape = list(given) if given else infer_shape(model, file)
    record = {
        "kind": "local",
        "file": str(file.resolve()),
        "factory": name,
        "sha256": sha256_file(file),
        "kwargs": kwargs,
    }
    inputs: dict[str, Any] = {"kind": "image", "shape": shape}
    if not given:
        inputs["inferred"] = True
    return Source(model, record, "image-classification", inputs)  # its class count: the trial pass's output


#: what a flat input of N features is, for a model whose first layer is an nn.Linear
_FLAT = {64: [1, 8, 8], 784: [1, 28, 28], 3072: [3, 32, 32]}
#: the layers that can take a model's input, in the order the model defines them
_FIRST_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.RNNBase, nn.Embedding, nn.EmbeddingBag)


def infer_shape(model: nn.Module, file: Path) -> list[int]:
    """The input C,H,W of an image model from its first layer, confirmed by a trial forward pass.

    First a Conv2d with C input channels: C x 8 x 8 (the default digits data) for C = 1, then
    1 x 28 x 28 (MNIST); C = 3: 3 x 32 x 32 (CIFAR-10), then 3 x 224 x 224. First a Linear with 64 /
    784 / 3072 inputs: digits / MNIST / CIFAR-10 flattened. Anything else: exit 2, pass `input_shape`.
    """
    first = next((m for m in model.modules() if isinstance(m, _FIRST_LAYERS)), None)
    fix = "pass `input_shape=C,H,W` (e.g. 1,8,8 for the digits data)"
    if isinstance(first, nn.Conv2d):
        c = first.in_channels
        tries = {1: [[1, 8, 8], [1, 28, 28]], 3: [[3, 32, 32], [3, 224, 224]]}.get(c, [[c, 8, 8]])
    elif isinstance(first, nn.Linear) and first.in_features in _FLAT:
        tries = [_FLAT[first.in_features]]
    else:
        if isinstance(first, nn.RNNBase):
            what = (f"its first layer is {type(first).__name__}, which takes sequences; a local model takes image "
                    "tensors C,H,W, so it must reshape its image into a sequence itself")
        elif isinstance(first, nn.Linear):
            what = f"its first layer is Linear with {first.in_features} inputs, not {' / '.join(map(str, _FLAT))}"
        else:
            what = f"its first layer is {type(first).__name__}" if first is not None else "it has no Linear/Conv layer"
        raise UsageError(f"cannot infer the input shape of the model in {file} ({what})", fix)
    errors = []
    for shape in tries:
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(2, *shape))
            return shape
        except Exception as exc:  # a trial: the next candidate, or the user is asked
            theirs = user_error(exc, file, "a trial forward pass")
            why = theirs.message.split(" (while")[0] if theirs else f"{type(exc).__name__}: {str(exc)[:120]}"
            errors.append(f"{'x'.join(map(str, shape))}: {why}")
    raise UsageError(f"cannot infer the input shape of the model in {file} (tried {'; '.join(errors)})", fix)


def rebuild(spec: dict[str, Any]) -> nn.Module:
    file = Path(spec["file"])
    if not file.is_file():
        raise UsageError(f"this package was built from local code {file}, which is not on this machine",
                         "copy the file there, or convert the model again")
    if sha256_file(file) != spec.get("sha256"):
        raise UsageError(f"{file} changed since the package was made", "convert the model again from the new code")
    return _call(_factory(file, spec["factory"]), spec.get("kwargs", {}), file)
