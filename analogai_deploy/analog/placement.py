"""The one record of what is analog: which modules go on tiles, how each maps to tiles, what stays digital.

`convert` decides the placement once (`plan`) and writes it to config.json["placement"]; every later
stage (load, recover, export, certify on either engine) reads it back and never re-derives it:

    from analogai_deploy.analog.placement import Placement
    placement = Placement.from_config(pkg.config)        # or pkg.placement after package.load
    placement.sha256                                      # what a certificate records it simulated
    for entry in placement.analog:                        # AnalogEntry, in module order
        entry.name, entry.type, entry.kind               # "features.1.conv.0", "Conv2d", "conv2d"
        entry.weight_shape, entry.groups                  # [16, 1, 3, 3], 16
        entry.matrices                                    # {"weight": [1, 9]}: [rows, cols] on tiles, per group
    for entry in placement.digital:                       # DigitalEntry: name, type, params, reason
        ...

Kinds (`AnalogEntry.kind`) and their tile matrices (rows = outputs, columns = inputs, the [out, in]
layout aihwkit's tiles hold); a layer with `groups` g maps g matrices of that size, group i taking
input channels i*in/g .. (i+1)*in/g and giving output channels i*out/g .. (i+1)*out/g:

    linear      nn.Linear                  weight [out, in]               -> [out, in]
    conv1d/2d/3d nn.ConvNd (any groups)    weight [out, in/g, *k]         -> [out/g, in/g * prod(k)] per group
    hf_conv1d   transformers' GPT-2 Conv1D weight [in, out] (transposed)  -> [out, in]
    attention   nn.MultiheadAttention      in_proj_weight [3E, E] (or q/k/v_proj_weight) and out_proj.weight,
                                           each its own matrix
    custom      a type added with register_layer: each analog weight flattened to [shape[0], rest]

The record round-trips through `to_dict` / `from_dict`; `sha256` covers the analog and digital lists
(canonical JSON), so a certificate that states the hash states exactly the placement it simulated.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from torch import nn

from .._config import envelope, read_section
from ..errors import PackageError, UsageError
from ..provenance import sha256_json
from .config import AnalogConfig
from .layers import AnalogLayer, AnalogMultiheadAttention, AnalogState
from .registry import analog_class_for

VERSION = 1
KINDS = ("linear", "conv1d", "conv2d", "conv3d", "hf_conv1d", "attention", "custom")
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)
# model libraries define their own (LlamaRMSNorm, Qwen2RMSNorm, T5LayerNorm, ...), known by name only
_NORM_SUFFIXES = ("RMSNorm", "LayerNorm", "GroupNorm", "BatchNorm")
NO_ANALOG_CLASS = "no analog layer registered for this type (see register_layer)"
NORM = "normalisation layer, kept digital by design"
FIRST_LAST = "first/last layer kept digital (keep_first_last)"


@dataclass(frozen=True)
class AnalogEntry:
    """One module whose weights live on analog tiles."""

    name: str
    type: str  # the digital class name (Linear, Conv2d, Conv1D, MultiheadAttention, ...)
    kind: str  # one of KINDS
    weight_shape: list[int]  # the main weight's shape as stored (HF Conv1D: [in, out])
    groups: int
    matrices: dict[str, list[int]]  # parameter name -> [rows, cols] each group puts on tiles
    params: int  # every parameter of the module (bias included)
    bias: bool

    @property
    def tile_weights(self) -> int:
        """How many weights go on tiles (all groups, every matrix)."""
        return self.groups * sum(r * c for r, c in self.matrices.values())


@dataclass(frozen=True)
class DigitalEntry:
    """One module with parameters that stays digital, and why."""

    name: str
    type: str
    params: int
    reason: str


class AnalogShare:
    """analog_params and analog_share of a record that lists its analog layers (each with `params`) in
    `analog_entries` and counts every parameter in `total_params`."""

    total_params: int

    @property
    def analog_entries(self) -> list:
        raise NotImplementedError

    @property
    def analog_params(self) -> int:
        return sum(e.params for e in self.analog_entries)

    @property
    def analog_share(self) -> float:
        return self.analog_params / self.total_params if self.total_params else 0.0


@dataclass
class Placement(AnalogShare):
    analog: list[AnalogEntry] = field(default_factory=list)
    digital: list[DigitalEntry] = field(default_factory=list)
    total_params: int = 0
    #: True when the package predates the record and the placement was derived from its analog settings
    derived: bool = False
    _version: ClassVar[int] = VERSION  # the version config.json's envelope names (_config.read_section)

    # -- identity --------------------------------------------------------------------------------------
    def _core(self) -> dict[str, Any]:
        return {"version": VERSION, "analog": [asdict(e) for e in self.analog],
                "digital": [asdict(e) for e in self.digital], "total_params": self.total_params}

    @property
    def sha256(self) -> str:
        return sha256_json(self._core())

    @property
    def analog_entries(self) -> list[AnalogEntry]:
        return self.analog

    @property
    def names(self) -> list[str]:
        """The analog modules' names, in module order."""
        return [e.name for e in self.analog]

    def entry(self, name: str) -> AnalogEntry:
        for e in self.analog:
            if e.name == name:
                return e
        raise KeyError(name)

    # -- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**self._core(), "analog_params": self.analog_params, "sha256": self.sha256}

    def serialise(self) -> dict[str, Any]:
        """config.json["placement"]: `to_dict` in the typed sections' envelope."""
        return envelope(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> Placement:
        """Read a record written by `to_dict`; a changed record (sha256 mismatch) or a bad field is refused."""
        if not isinstance(data, dict):
            raise PackageError("config.json placement must be a JSON object")
        if data.get("version") != VERSION:
            raise PackageError(f"placement version {data.get('version')!r} is not supported (this toolkit reads {VERSION})")
        try:
            analog = [AnalogEntry(**{**e, "weight_shape": list(e["weight_shape"]),
                                     "matrices": {k: list(v) for k, v in e["matrices"].items()}})
                      for e in data.get("analog", [])]
            digital = [DigitalEntry(**e) for e in data.get("digital", [])]
            placement = cls(analog, digital, int(data.get("total_params", 0)))
        except (TypeError, KeyError, AttributeError) as exc:
            raise PackageError(f"config.json placement is malformed ({type(exc).__name__}: {exc})") from None
        bad = [e.kind for e in placement.analog if e.kind not in KINDS]
        if bad:
            raise PackageError(f"config.json placement names unknown layer kinds {sorted(set(bad))}")
        if data.get("sha256") not in (None, placement.sha256):
            raise PackageError("config.json placement does not match its sha256 (edited or corrupt)",
                               "convert the model again")
        return placement

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Placement:
        """The placement of a package's config.json (packages made before the record: see package.load)."""
        placement = read_section(config, "placement", cls)
        if placement is None:
            raise PackageError("this package has no placement record (made by an older analogai-deploy)",
                               "load it with analogai_deploy.load (which derives it) or convert it again")
        return placement

    def conversion_summary(self) -> dict[str, Any]:
        """config.json["conversion"]: the counts, derived from this record."""
        return {"converted_layers": len(self.analog), "analog_params": self.analog_params,
                "total_params": self.total_params, "analog_share": round(self.analog_share, 6)}

    def summary(self) -> str:
        by_type: dict[str, int] = {}
        for e in self.analog:
            by_type[e.type] = by_type.get(e.type, 0) + 1
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(by_type.items()))
        lines = [f"converted {len(self.analog)} layers ({kinds or 'none'}); "
                 f"{self.analog_share:.1%} of {self.total_params:,} parameters on analog tiles"]
        reasons: dict[tuple[str, str], list[str]] = {}
        for e in self.digital:
            reasons.setdefault((e.type, e.reason), []).append(e.name)
        for (typ, reason), names in sorted(reasons.items()):
            shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
            lines.append(f"  digital: {typ} x{len(names)} - {reason} [{shown}]")
        return "\n".join(lines)


# -- deciding ------------------------------------------------------------------------------------------
def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def kind_of(module: nn.Module) -> str:
    """The placement kind of a digital module that has an analog class."""
    t = type(module)
    if t is nn.Linear:
        return "linear"
    if t in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        return t.__name__.lower()
    if t is nn.MultiheadAttention:
        return "attention"
    if t.__name__ == "Conv1D" and t.__module__.startswith("transformers"):
        return "hf_conv1d"
    return "custom"


def _entry(name: str, module: nn.Module) -> AnalogEntry:
    kind = kind_of(module)
    params = sum(p.numel() for p in module.parameters())
    groups = int(getattr(module, "groups", 1)) if kind.startswith("conv") else 1
    if kind == "attention":
        weights = (("in_proj_weight",) if module._qkv_same_embed_dim
                   else ("q_proj_weight", "k_proj_weight", "v_proj_weight")) + ("out_proj.weight",)
        matrices = {w: list(module.get_parameter(w).shape) for w in weights}
        shape = matrices[weights[0]]
        bias = module.in_proj_bias is not None
    else:
        w = module.get_parameter("weight") if kind != "custom" else None
        bias = getattr(module, "bias", None) is not None
        if kind == "linear":
            matrices = {"weight": list(w.shape)}
        elif kind.startswith("conv"):
            out = w.shape[0] // groups
            matrices = {"weight": [out, math.prod(w.shape[1:])]}
        elif kind == "hf_conv1d":
            matrices = {"weight": [w.shape[1], w.shape[0]]}
        else:
            analog_cls = analog_class_for(module)
            names = getattr(analog_cls, "analog_weights", ("weight",))
            names = names if isinstance(names, tuple) else ("weight",)
            matrices = {}
            for n in names:
                p = module.get_parameter(n)
                matrices[n] = [p.shape[0], math.prod(p.shape[1:])] if p.dim() > 1 else [1, p.numel()]
            w = module.get_parameter(names[0])
        shape = list(w.shape)
    return AnalogEntry(name, type(module).__name__, kind, [int(s) for s in shape], groups,
                       {k: [int(v) for v in m] for k, m in matrices.items()}, int(params), bool(bias))


def _excluded(name: str, module: nn.Module, config: AnalogConfig) -> str:
    if type(module).__name__ in config.exclude_types:
        return f"excluded by type {type(module).__name__}"
    for pattern in config.exclude:
        if fnmatch.fnmatchcase(name, pattern):
            return f"excluded by pattern {pattern!r}"
    if config.include and not any(fnmatch.fnmatchcase(name, p) for p in config.include):
        return "not matched by include patterns"
    return ""


def candidates(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], list[DigitalEntry]]:
    """Modules that could go analog (registered types), and the modules with parameters that cannot."""
    found: list[tuple[str, nn.Module]] = []
    digital: list[DigitalEntry] = []
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside):
            continue  # part of a converted parent (e.g. an attention block's out_proj)
        analog_cls = analog_class_for(module)
        if analog_cls is not None:
            found.append((name, module))
            if analog_cls is AnalogMultiheadAttention or any(True for _ in module.children()):
                inside.append(name)
        elif isinstance(module, AnalogLayer):
            raise ValueError(f"module {name!r} is already analog; convert a digital model")
        elif _own_params(module):
            is_norm = isinstance(module, _NORM_TYPES) or type(module).__name__.endswith(_NORM_SUFFIXES)
            reason = NORM if is_norm else NO_ANALOG_CLASS
            digital.append(DigitalEntry(name, type(module).__name__, _own_params(module), reason))
    return found, digital


def check_selection(model: nn.Module, config: AnalogConfig) -> None:
    """Refuse selections that cannot mean what the user typed: unknown type names, patterns matching nothing."""
    from ..errors import closest

    from .registry import registered_names

    found, _ = candidates(model)
    types = sorted({type(m).__name__ for _, m in found})
    known = set(types) | registered_names()  # every analog-capable type name
    for t in config.exclude_types:
        if t not in known:
            hint = closest(t, sorted(known))
            raise UsageError(f"`exclude_types={t}` names no analog-capable layer type of this model",
                             (hint + " " if hint else "") + f"this model's analog-capable types: {', '.join(types) or 'none'}")
    names = [n for n, _ in found]
    for field, patterns in (("include", config.include), ("exclude", config.exclude)):
        for p in patterns:
            if not any(fnmatch.fnmatchcase(n, p) for n in names):
                hint = closest(p, names)
                shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
                raise UsageError(f"`{field}={p}` matches no analog-capable module",
                                 (hint + " " if hint else "") + f"module names look like: {shown}")


def plan(model: nn.Module, config: AnalogConfig | None = None) -> Placement:
    """Decide the placement of a digital `model` under `config` (changes nothing)."""
    config = config or AnalogConfig()
    found, digital = candidates(model)
    keep = {found[0][0], found[-1][0]} if config.keep_first_last and found else set()
    analog: list[AnalogEntry] = []
    for name, module in found:
        reason = FIRST_LAST if name in keep else _excluded(name, module, config)
        if reason:
            digital.append(DigitalEntry(name, type(module).__name__, sum(p.numel() for p in module.parameters()), reason))
        else:
            analog.append(_entry(name, module))
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    digital.sort(key=lambda e: order.get(e.name, 0))
    return Placement(analog, digital, sum(p.numel() for p in model.parameters()))


def placed(model: nn.Module, entry: AnalogEntry) -> nn.Module:
    """The module a placement entry names in `model`. One missing or of another type means the package does
    not fit its architecture: PackageError, nothing guessed."""
    try:
        module = model.get_submodule(entry.name) if entry.name else model
    except AttributeError:
        module = None
    if module is None or type(module).__name__ != entry.type:
        found = type(module).__name__ if module is not None else "nothing"
        raise PackageError(f"the placement puts {entry.type} {entry.name!r} on tiles, but the model has {found} there",
                           "the package's config.json does not fit its architecture; convert again")
    return module


def apply(model: nn.Module, placement: Placement, config: AnalogConfig | None = None) -> None:
    """Make exactly the placement's analog modules analog-aware, in place (noise settings from `config`);
    a module the record names must be there (`placed`)."""
    config = config or AnalogConfig()
    for e in placement.analog:
        module = placed(model, e)
        analog_cls = analog_class_for(module)
        if analog_cls is None:
            raise PackageError(f"the placement puts {e.type} {e.name!r} on tiles, but no analog layer is registered "
                               f"for {e.type} here", "register it (register_layer) before loading")
        analog_cls.from_digital(module, AnalogState(config.sigma, config.noise_scale, config.act_noise))
