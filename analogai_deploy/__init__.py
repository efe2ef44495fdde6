"""analogai-deploy: make neural networks survive analog in-memory-computing hardware.

    import analogai_deploy as ad
    pkg = ad.convert("resnet18", ad.AnalogConfig(), "runs/resnet18", num_classes=10)
    pkg = ad.load("runs/resnet18")
    cert = ad.certify("runs/lenet", ad.CertifyConfig(repeats=20), times="1d")   # a config plus keyword overrides

Heavy submodules load on first use, so `import analogai_deploy` is cheap.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _deferred

_deferred.install()  # aihwkit's module-level import of scipy.optimize waits for its first use (_deferred.py)

if TYPE_CHECKING:  # what type checkers see; at run time each name loads on first use (_LAZY, __getattr__)
    from .analog.config import AnalogConfig
    from .analog.convert import ConversionReport, noise, set_noise
    from .analog.registry import register_layer
    from .api import certify, convert, load, to_aihwkit
    from .certification import Certificate, CertifyConfig
    from .hardware.devices import DeviceConfig, IOSettings
    from .launcher import recover
    from .analog.mapping import MappingConfig
    from .exporter import ExportConfig, ExportResult, export
    from .package import Package
    from .recovery.recipe import Recipe
    from .zoo import Policy, from_pretrained, publish, pull

__all__ = [
    # the verbs (api.py; recover: launcher.py; export: exporter; publish, pull, from_pretrained: zoo)
    "convert", "recover", "certify", "export", "to_aihwkit", "publish", "pull", "from_pretrained", "load",
    # the configs they take and the records they return
    "AnalogConfig", "Recipe", "CertifyConfig", "DeviceConfig", "IOSettings", "MappingConfig", "ExportConfig",
    "Policy", "Package", "ConversionReport", "Certificate", "ExportResult",
    # analog layers
    "register_layer", "set_noise", "noise",
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
    "recover": "analogai_deploy.launcher",  # nproc: launcher.py runs the stage on N local processes
    "certify": "analogai_deploy.api",
    "to_aihwkit": "analogai_deploy.api",
    "export": "analogai_deploy.exporter",
    "publish": "analogai_deploy.zoo",
    "pull": "analogai_deploy.zoo",
    "from_pretrained": "analogai_deploy.zoo",
    "Recipe": "analogai_deploy.recovery.recipe",
    "CertifyConfig": "analogai_deploy.certification",
    "Certificate": "analogai_deploy.certification",
    "DeviceConfig": "analogai_deploy.hardware.devices",
    "IOSettings": "analogai_deploy.hardware.devices",
    "MappingConfig": "analogai_deploy.analog.mapping",
    "ExportConfig": "analogai_deploy.exporter",
    "ExportResult": "analogai_deploy.exporter",
    "Policy": "analogai_deploy.zoo",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analogai_deploy' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
