"""Turn a digital model into an analog-aware one, and report exactly what was and was not converted."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import AnalogConfig
from .layers import AnalogLayer
from .placement import AnalogShare, Placement, apply, plan


@dataclass
class LayerRecord:
    name: str
    type: str
    params: int
    analog_type: str = ""
    reason: str = ""


@dataclass
class ConversionReport(AnalogShare):
    """What `convert` did, as a list view of its `Placement` (the record config.json stores)."""

    converted: list[LayerRecord] = field(default_factory=list)
    digital: list[LayerRecord] = field(default_factory=list)
    total_params: int = 0
    placement: Placement | None = None

    @classmethod
    def of(cls, placement: Placement, analog_types: dict[str, str]) -> ConversionReport:
        return cls(
            [LayerRecord(e.name, e.type, e.params, analog_type=analog_types.get(e.name, "")) for e in placement.analog],
            [LayerRecord(e.name, e.type, e.params, reason=e.reason) for e in placement.digital],
            placement.total_params, placement,
        )

    @property
    def analog_entries(self) -> list[LayerRecord]:
        return self.converted

    def to_dict(self) -> dict:
        return {
            "converted_layers": len(self.converted),
            "analog_params": self.analog_params,
            "total_params": self.total_params,
            "analog_share": round(self.analog_share, 6),
            "converted": [vars(r) for r in self.converted],
            "digital": [vars(r) for r in self.digital],
        }

    def summary(self) -> str:
        return self.placement.summary() if self.placement is not None else ""


def convert(model: nn.Module, config: AnalogConfig | None = None, placement: Placement | None = None) -> ConversionReport:
    """Make `model` analog-aware in place and return what was converted.

    Without `placement`, layers whose exact type is registered (see `register_layer`) become analog
    layers, as `config` selects (placement.plan); every other module that owns parameters is listed
    with the reason it stays digital. With `placement` (a package's record), exactly its modules.
    """
    config = config or AnalogConfig()
    placement = placement or plan(model, config)
    apply(model, placement, config)
    modules = dict(model.named_modules())
    return ConversionReport.of(placement, {e.name: type(modules[e.name]).__name__ for e in placement.analog})


def analog_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AnalogLayer)]


def set_noise(model: nn.Module, sigma: float | None = None, act_noise: float | None = None) -> None:
    """Set the relative weight-noise level (and optionally output noise) of every analog layer."""
    for _, layer in analog_layers(model):
        if sigma is not None:
            layer.analog.sigma = float(sigma)
        if act_noise is not None:
            layer.analog.act_noise = float(act_noise)


@contextmanager
def noise(model: nn.Module, sigma: float, act_noise: float | None = None):
    """Temporarily run every analog layer at weight-noise level `sigma` (0 = the clean digital model)."""
    saved = [(layer.analog.sigma, layer.analog.act_noise) for _, layer in analog_layers(model)]
    set_noise(model, sigma, act_noise)
    try:
        yield model
    finally:
        for (_, layer), (s, a) in zip(analog_layers(model), saved):
            layer.analog.sigma, layer.analog.act_noise = s, a


def noise_off(model: nn.Module):
    return noise(model, 0.0, 0.0)


@torch.no_grad()
def to_digital(model: nn.Module) -> nn.Module:
    """Undo `convert` in place: every analog layer goes back to its digital class (for export/aihwkit)."""
    for _, layer in analog_layers(model):
        digital = next(c for c in type(layer).__mro__[1:] if not issubclass(c, AnalogLayer))
        layer.__class__ = digital
        del layer.analog
    return model
