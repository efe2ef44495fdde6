"""analogai-deploy: make neural networks survive analog in-memory-computing hardware.

    import analogai_deploy as ad
    pkg = ad.convert("resnet18", ad.AnalogConfig(), "runs/resnet18", num_classes=10)
    pkg = ad.load("runs/resnet18")

Heavy submodules load on first use, so `import analogai_deploy` is cheap.
"""
from __future__ import annotations

import importlib
from typing import Any

from . import _deferred

_deferred.install()  # aihwkit's module-level import of scipy.optimize waits for its first use (_deferred.py)

__all__ = [
    "AnalogConfig", "ConversionReport", "Package", "convert", "load", "register_layer", "set_noise", "noise",
    "recover", "certify", "export", "from_pretrained", "to_aihwkit",
]

_LAZY = {
    "AnalogConfig": "analogai_deploy.analog.config",
    "ConversionReport": "analogai_deploy.analog.convert",
    "set_noise": "analogai_deploy.analog.convert",
    "noise": "analogai_deploy.analog.convert",
    "register_layer": "analogai_deploy.analog.registry",
    "Package": "analogai_deploy.package",
    "convert": "analogai_deploy.api",
    "load": "analogai_deploy.api",
    # recover / certify: the stage functions plus nproc (launcher.py runs a stage on N local processes);
    # subpackage names differ from the verbs, so they never shadow them
    "recover": "analogai_deploy.launcher",
    "certify": "analogai_deploy.launcher",
    "export": "analogai_deploy.exporter",
    "to_aihwkit": "analogai_deploy.certification",
    "from_pretrained": "analogai_deploy.zoo",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analogai_deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
