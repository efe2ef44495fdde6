"""Turn a digital model into an analog-aware one, and report exactly what was and was not converted."""
from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import AnalogConfig
from .layers import AnalogLayer, AnalogMultiheadAttention, AnalogState
from .registry import analog_class_for

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)


@dataclass
class LayerRecord:
    name: str
    type: str
    params: int
    analog_type: str = ""
    reason: str = ""


@dataclass
class ConversionReport:
    converted: list[LayerRecord] = field(default_factory=list)
    digital: list[LayerRecord] = field(default_factory=list)
    total_params: int = 0

    @property
    def analog_params(self) -> int:
        return sum(r.params for r in self.converted)

    @property
    def analog_share(self) -> float:
        return self.analog_params / self.total_params if self.total_params else 0.0

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
        by_type: dict[str, int] = {}
        for r in self.converted:
            by_type[r.type] = by_type.get(r.type, 0) + 1
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(by_type.items()))
        lines = [
            f"converted {len(self.converted)} layers ({kinds or 'none'}); "
            f"{self.analog_share:.1%} of {self.total_params:,} parameters on analog tiles"
        ]
        reasons: dict[tuple[str, str], list[str]] = {}
        for r in self.digital:
            reasons.setdefault((r.type, r.reason), []).append(r.name)
        for (typ, reason), names in sorted(reasons.items()):
            shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
            lines.append(f"  digital: {typ} x{len(names)} - {reason} [{shown}]")
        return "\n".join(lines)


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _excluded(name: str, module: nn.Module, config: AnalogConfig) -> str:
    if type(module).__name__ in config.exclude_types:
        return f"excluded by type {type(module).__name__}"
    for pattern in config.exclude:
        if fnmatch.fnmatchcase(name, pattern):
            return f"excluded by pattern {pattern!r}"
    if config.include and not any(fnmatch.fnmatchcase(name, p) for p in config.include):
        return "not matched by include patterns"
    return ""


def convert(model: nn.Module, config: AnalogConfig | None = None) -> ConversionReport:
    """Make `model` analog-aware in place and return what was converted.

    Layers whose exact type is registered (see `register_layer`) become analog layers; every other
    module that owns parameters is listed in the report with the reason it stays digital.
    """
    config = config or AnalogConfig()
    report = ConversionReport(total_params=sum(p.numel() for p in model.parameters()))
    candidates: list[tuple[str, nn.Module, type]] = []
    inside_analog: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside_analog):
            continue  # part of a converted parent (e.g. an attention block's out_proj)
        analog_cls = analog_class_for(module)
        if analog_cls is not None:
            candidates.append((name, module, analog_cls))
            if analog_cls is AnalogMultiheadAttention or any(True for _ in module.children()):
                inside_analog.append(name)
        elif isinstance(module, AnalogLayer):
            raise ValueError(f"module {name!r} is already analog; convert a digital model")
        elif _own_params(module):
            reason = (
                "normalisation layer, kept digital by design"
                if isinstance(module, _NORM_TYPES)
                else "no analog layer registered for this type (see register_layer)"
            )
            report.digital.append(LayerRecord(name, type(module).__name__, _own_params(module), reason=reason))

    keep = set()
    if config.keep_first_last and candidates:
        keep = {candidates[0][0], candidates[-1][0]}
    for name, module, analog_cls in candidates:
        params = sum(p.numel() for p in module.parameters())
        reason = "first/last layer kept digital (keep_first_last)" if name in keep else _excluded(name, module, config)
        if reason:
            report.digital.append(LayerRecord(name, type(module).__name__, params, reason=reason))
            continue
        record = LayerRecord(name, type(module).__name__, params, analog_type=analog_cls.__name__)
        analog_cls.from_digital(module, AnalogState(config.sigma, config.noise_scale, config.act_noise))
        report.converted.append(record)
    return report


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
