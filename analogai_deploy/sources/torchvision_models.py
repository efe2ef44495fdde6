"""torchvision classification builders by name (weights random or from a local file: no downloads here)."""
from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn

from ..errors import UsageError
from . import weights as weights_io
from .source import Source

# Models whose architecture fixes or needs a particular input size.
_INPUT_SIZE = {"inception_v3": 299}


@functools.cache
def names() -> list[str]:
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _kwargs(name: str, num_classes: int | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False  # the auxiliary heads only exist for ImageNet training
        kwargs["init_weights"] = False  # scipy-based truncated normal init is slow and irrelevant here
    return kwargs


def _default_shape(name: str) -> list[int]:
    import torchvision.models

    builder = torchvision.models.get_model_builder(name)
    size = _INPUT_SIZE.get(name, 224)
    params = inspect.signature(builder).parameters
    if name.startswith(("vit_", "swin", "maxvit")) or "image_size" in params:
        size = 224
    return [3, size, size]


def build(name: str, *, num_classes=None, weights=None, input_shape=None) -> Source:
    import torchvision.models

    if weights and not weights.endswith((".pt", ".pth", ".bin", ".safetensors")) and "/" not in weights:
        # A torchvision weights enum name such as IMAGENET1K_V1 means a download.
        raise UsageError(
            f"pretrained weights {weights!r} would need a download and this toolkit loads nothing from the network",
            "download the checkpoint yourself and pass `weights=path/to/file.pth` (or .safetensors)",
        )
    kwargs = _kwargs(name, num_classes)
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs)
    except TypeError as exc:
        raise UsageError(f"cannot build {name}: {exc}") from None
    if weights:
        weights_io.apply(model, weights)
    spec = {"kind": "torchvision", "name": name, "kwargs": kwargs}
    shape = list(input_shape) if input_shape else _default_shape(name)
    fixed = getattr(model, "image_size", None)  # ViT: the patch grid and position embeddings fix the size
    if isinstance(fixed, int) and shape[1:] != [fixed, fixed]:
        raise UsageError(f"{name} takes {shape[0]}x{fixed}x{fixed} images only (its size is fixed), "
                         f"not {'x'.join(map(str, shape))}", f"drop `input_shape` or pass {shape[0]},{fixed},{fixed}")
    return Source(model, spec, "image-classification", {"kind": "image", "shape": shape})  # classes: trial pass


def rebuild(spec: dict[str, Any]) -> nn.Module:
    import torchvision.models

    if spec.get("name") not in names():
        raise UsageError(f"package names an unknown torchvision model {spec.get('name')!r}")
    return torchvision.models.get_model(spec["name"], weights=None, **spec.get("kwargs", {}))
