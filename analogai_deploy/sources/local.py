"""A model from the user's own code: `path/to/file.py:factory` (trusted, local: it runs that file)."""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import UsageError
from . import Source, weights as weights_io


def _split(spec: str) -> tuple[Path, str]:
    file, _, factory = spec.rpartition(":") if spec.count(":") and not spec.endswith(".py") else (spec, "", "")
    if not factory:
        raise UsageError(f"{spec!r} names no factory function", "write path/to/file.py:factory")
    return Path(file), factory


def _factory(file: Path, name: str):
    if not file.is_file():
        raise UsageError(f"model file not found: {file}", "check the path before ':factory'")
    mod_name = "analogai_user_" + hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(mod_name, file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    fn = getattr(module, name, None)
    if not callable(fn):
        from ..errors import unknown

        raise unknown(f"factory in {file}", name, [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")])
    return fn


def _call(fn, kwargs: dict[str, Any]) -> nn.Module:
    params = inspect.signature(fn).parameters
    accepted = {k: v for k, v in kwargs.items() if k in params or any(p.kind == p.VAR_KEYWORD for p in params.values())}
    model = fn(**accepted)
    if not isinstance(model, nn.Module):
        raise UsageError(f"factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build(spec: str, *, num_classes=None, weights=None, input_shape=None) -> Source:
    file, name = _split(spec)
    kwargs = {"num_classes": int(num_classes)} if num_classes is not None else {}
    fn = _factory(file, name)
    model = _call(fn, kwargs)
    if "num_classes" in kwargs and "num_classes" not in inspect.signature(fn).parameters:
        kwargs.pop("num_classes")
    if weights:
        weights_io.apply(model, weights)
    shape = list(input_shape or getattr(fn, "input_shape", None) or getattr(model, "input_shape", None) or [3, 32, 32])
    record = {
        "kind": "local",
        "file": str(file.resolve()),
        "factory": name,
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        "kwargs": kwargs,
    }
    out = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return Source(model, record, "image-classification", {"kind": "image", "shape": shape}, out[-1].out_features if out else None)


def rebuild(spec: dict[str, Any]) -> nn.Module:
    file = Path(spec["file"])
    if not file.is_file():
        raise UsageError(f"this package was built from local code {file}, which is not on this machine",
                         "copy the file there, or convert the model again")
    if hashlib.sha256(file.read_bytes()).hexdigest() != spec.get("sha256"):
        raise UsageError(f"{file} changed since the package was made", "convert the model again from the new code")
    return _call(_factory(file, spec["factory"]), spec.get("kwargs", {}))
