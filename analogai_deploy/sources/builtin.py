"""Built-in models: `lenet` (a LeNet-style CNN) and `mlp` for the bundled digits data, and
`resnet18_cifar`, the seed's ResNet-18 in its CIFAR form (3x3 stem at stride 1, no max-pool)."""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UsageError
from .source import Source


def lenet(num_classes: int = 10, in_channels: int = 1, size: int = 8, width: int = 16) -> nn.Module:
    """Two conv blocks and two linear layers; for 8x8 digits (or any small square image)."""
    after = size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * after * after, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


def mlp(num_classes: int = 10, in_channels: int = 1, size: int = 8, hidden: int = 128) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * size * size, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )


def resnet18_cifar(num_classes: int = 10, in_channels: int = 3, size: int = 32, width: int = 64) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: conv1 3x3 stride 1 padding 1 (no bias), no max-pool,
    so a 32x32 image reaches layer1 at 32x32 (the ImageNet stem would shrink it to 8x8).

    width: channels of the stem and layer1 (doubled at each of layers 2-4); 64 is the standard network,
    smaller widths are the same architecture with ~(width/64)^2 of its parameters and FLOPs."""
    import torchvision.models
    from torchvision.models.resnet import BasicBlock

    if width < 1:
        raise UsageError(f"resnet18_cifar width must be >= 1, got {width}")
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    if width != 64:  # rebuild the stages at this width, initialised as torchvision initialises them
        model.bn1 = nn.BatchNorm2d(width)
        model.inplanes = width
        model.layer1 = model._make_layer(BasicBlock, width, 2)
        model.layer2 = model._make_layer(BasicBlock, 2 * width, 2, stride=2)
        model.layer3 = model._make_layer(BasicBlock, 4 * width, 2, stride=2)
        model.layer4 = model._make_layer(BasicBlock, 8 * width, 2, stride=2)
        model.fc = nn.Linear(8 * width, num_classes)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


BUILDERS = {"lenet": lenet, "mlp": mlp, "resnet18_cifar": resnet18_cifar}
#: the input each model is made for when --input-shape is not given
DEFAULT_SHAPE = {"lenet": [1, 8, 8], "mlp": [1, 8, 8], "resnet18_cifar": [3, 32, 32]}


def names() -> list[str]:
    return sorted(BUILDERS)


def build(name: str, *, num_classes=None, weights=None, input_shape=None, width: int | None = None) -> Source:
    """width: resnet18_cifar's base width (64 = the standard network); recorded in the package's spec."""
    shape = list(input_shape or DEFAULT_SHAPE[name])
    if name != "resnet18_cifar" and (shape[1] != shape[2] or shape[1] % 4):
        raise UsageError(f"{name} needs a square input whose side is a multiple of 4, got {shape}")
    kwargs: dict[str, Any] = {"num_classes": int(num_classes or 10), "in_channels": shape[0], "size": shape[1]}
    if width is not None:
        if name != "resnet18_cifar":
            raise UsageError(f"width is an option of resnet18_cifar, not of {name}")
        kwargs["width"] = int(width)
    model = BUILDERS[name](**kwargs)
    if weights:
        from . import weights as weights_io

        weights_io.apply(model, weights)
    spec = {"kind": "builtin", "name": name, "kwargs": kwargs}
    return Source(model, spec, "image-classification", {"kind": "image", "shape": shape}, kwargs["num_classes"])


def rebuild(spec: dict[str, Any]) -> nn.Module:
    if spec.get("name") not in BUILDERS:
        raise UsageError(f"package names an unknown built-in model {spec.get('name')!r}")
    return BUILDERS[spec["name"]](**spec.get("kwargs", {}))
