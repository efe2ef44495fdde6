"""The public verbs, one per stage, with typed signatures: a config object plus keyword overrides.

    convert(source, AnalogConfig, output)              -> Package
    recover(package, Recipe | name, data)              -> Package
    certify(package, CertifyConfig, **CertifyKeywords) -> Certificate
    export(package, ExportConfig, **fields)            -> ExportResult
    to_aihwkit(package, CertifyConfig, **ChipKeywords) -> the aihwkit model certify simulates
    publish(package) / pull(name) / from_pretrained(name)

recover is launcher.recover (the stage on `nproc` local processes); export, publish, pull and
from_pretrained are their modules' own functions (exporter, zoo), typed there.

A keyword given beside a config replaces that field of the config; a keyword left at None keeps it.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import torch
from torch import nn

from . import package as pkg
from .analog.config import AnalogConfig
from .analog.convert import convert as convert_model
from .analog.placement import check_selection, plan
from .analog.mapping import MappingConfig
from ._config import expect
from .errors import closest
from .provenance import now, versions
from .sources import Source, check_runs, resolve

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .certification import Certificate, CertifyConfig
    from .hardware.devices import DeviceConfig

F = TypeVar("F", bound=Callable[..., Any])


def default_output(spec: str) -> Path:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(spec.split(":", 1)[-1].split(".py")[0]).name or spec).strip("-.")
    return Path("runs") / (base or "model")


def convert(
    source: str | Source,
    config: AnalogConfig | None = None,
    output: str | Path | None = None,
    *,
    num_classes: int | None = None,
    weights: str | None = None,
    task: str | None = None,
    input_shape: list[int] | str | None = None,
    tokenizer: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    mapping: MappingConfig | None = None,
) -> pkg.Package:
    """Build the model named by `source`, make it analog-aware, and write a package.

    `source` is a spec string (`resnet18`, `hf:/path/to/folder`, `file.py:factory`) or a `Source`.
    Returns the written package with the converted model and its `ConversionReport` in `.report`.
    `mapping`: the tile mapping recorded in config.json["mapping"] (default: mapping.DEFAULTS).
    An existing package at `output` is replaced only with `overwrite`; anything else there is refused.
    """
    config = expect(config, AnalogConfig) or AnalogConfig()
    expect(mapping, MappingConfig, "mapping")
    if isinstance(source, str):  # refused before the model is built (a Hub model can take minutes)
        pkg.check_output(output or default_output(source), overwrite=overwrite)
    torch.manual_seed(seed)  # random-init architectures are reproducible from the recorded seed
    src = source if isinstance(source, Source) else resolve(
        source, num_classes=num_classes, weights=weights, task=task, input_shape=input_shape, tokenizer=tokenizer
    )
    model: nn.Module = src.model.eval()
    spec_name = source if isinstance(source, str) else src.spec.get("name", "model")
    check_runs(src, spec_name, num_classes)  # before anything is decided or written; sets src.num_classes
    check_selection(model, config)
    placement = plan(model, config)
    report = convert_model(model, config, placement)
    meta = {
        "source": src.spec,
        "task": src.task,
        "num_classes": src.num_classes,
        "input": src.input,
        **({"tokenizer": src.tokenizer} if src.tokenizer else {}),
        "analog": config.serialise(),  # typed sections: the envelope (_config.read_section reads it)
        "placement": placement.serialise(),
        # how the weights and signals go onto tiles; certify uses it unless told otherwise (analog/mapping.py)
        "mapping": (mapping or MappingConfig()).complete().serialise(),
        "conversion": placement.conversion_summary(),  # the counts, for readers of older packages' summary
        "provenance": {
            "created": now(),
            "seed": seed,
            "versions": versions(),
            "history": [{"stage": "convert", "time": now(), "source": spec_name, "weights_file": weights}],
        },
    }
    out = pkg.write(output or default_output(spec_name), meta, model, src.extra_files, overwrite=overwrite)
    out.model, out.report, out.placement = model, report, placement
    return out


def load(path: str | Path, *, verify: bool = True) -> pkg.Package:
    """Read a package: the analog-aware model, rebuilt and loaded bit for bit (sha256 checked)."""
    return pkg.load(path, verify_hash=verify)


class DeviceKeywords(TypedDict, total=False):
    """The keywords of certify and to_aihwkit that build the DeviceConfig (None: keep)."""

    device: str | DeviceConfig | None
    preset: str | None
    tile: str | None
    device_file: str | Path | None


class IOKeywords(TypedDict, total=False):
    """The keywords of certify and to_aihwkit that set the device's IOSettings (None: keep)."""

    dac_bits: int | None
    adc_bits: int | None
    out_noise: float | None
    tile_size: int | None
    drift_compensation: bool | None
    n_w: float | None
    w_noise_type: str | None


class ChipKeywords(DeviceKeywords, IOKeywords, total=False):
    """The chip both verbs simulate: the device, its IO settings, the data and the mapping."""

    data: str | None
    match_qat: bool | None
    mapping: MappingConfig | dict[str, Any] | None


class CertifyKeywords(ChipKeywords, total=False):
    """certify's keywords beyond the chip: the Monte Carlo and its gate."""

    times: str | list[str] | None
    repeats: int | str | None
    seed: int | None
    ci_width: float | None
    max_repeats: int | None
    max_drop: float | None
    at: str | None
    metric: str | None
    limit: int | None
    engine: str | None


DEVICE_KEYWORDS = tuple(DeviceKeywords.__annotations__)
IO_KEYWORDS = tuple(IOKeywords.__annotations__)


def typed_keywords(keywords: type) -> Callable[[F], F]:
    """Show a verb's `**settings: Unpack[keywords]` to help() and inspect as the keywords themselves (type
    checkers read the Unpack): one list of names and types for certify and to_aihwkit, a real signature for each."""

    def show(verb: F) -> F:
        signature = inspect.signature(verb)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        named = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=getattr(hint, "__forward_arg__", hint))
                 for name, hint in keywords.__annotations__.items()]
        verb.__signature__ = signature.replace(parameters=own + named)  # type: ignore[attr-defined]
        return verb

    return show


def _settings(verb: str, keywords: type, given: dict[str, Any]) -> tuple[dict, dict, dict]:
    """A verb's keyword settings, those left at None dropped, split into (the config's own fields, its
    device's, its IO settings'); a keyword the verb does not take fails as Python's own would."""
    for name in given:
        if name not in keywords.__annotations__:
            hint = closest(name, keywords.__annotations__)
            raise TypeError(f"{verb}() got an unexpected keyword argument {name!r}" + (f"; {hint}" if hint else ""))
    fields = {k: v for k, v in given.items() if v is not None}
    device = {k: fields.pop(k) for k in DEVICE_KEYWORDS if k in fields}
    io = {k: fields.pop(k) for k in IO_KEYWORDS if k in fields}
    return fields, device, io


def certify_config(config: CertifyConfig | None, fields: dict[str, Any], device: dict[str, Any],
                    io: dict[str, Any]) -> CertifyConfig | None:
    """`config` with the given keyword fields in place of its own (None where no config was given)."""
    if config is None:
        return None
    from .certification.config import CertifyConfig, device_config
    from .hardware.devices import DeviceConfig

    merged = config.to_dict()
    for key, value in fields.items():
        if key == "times" and isinstance(value, str):
            value = value.split(",")
        merged[key] = value.to_dict() if key == "mapping" and not isinstance(value, dict) else value
    if isinstance(device.get("device"), DeviceConfig) or "device_file" in device:
        merged["device"] = device_config(device.get("device"), device.get("device_file"),
                                         device.get("preset"), device.get("tile", "auto"), io).to_dict()
    elif device or io:
        dev = merged["device"]
        merged["device"] = {**dev, **{("name" if k == "device" else k): v for k, v in device.items()},
                            "io": {**dev["io"], **io}}
    return CertifyConfig.from_dict(merged)


@typed_keywords(CertifyKeywords)
def certify(
    package: str | Path | pkg.Package,
    config: CertifyConfig | None = None,
    *,
    progress: Callable[..., Any] | None = None,
    write: bool = True,
    output: str | Path | None = None,
    overwrite: bool = False,
    nproc: int = 1,
    dist_timeout: float | None = None,
    **settings: Unpack[CertifyKeywords],
) -> Certificate:
    """Monte Carlo certificate of `package` on a simulated analog device, written into the package
    (certification.certify). `config` (a CertifyConfig) gives every setting at once; the keywords are its
    fields (`device`, `preset`, `tile`, `device_file` and the IO settings `dac_bits` ... `w_noise_type` those of
    its DeviceConfig) and replace them. Without a config, the keywords left at None take certify's defaults
    (PCM, 1s,1h,1d,1y, 10 repeats, seed 0, the package's mapping). `output`: write a copy of the package
    with the certificate there; `nproc` > 1 spreads the repeats over that many local processes."""
    fields, dev, io = _settings("certify", CertifyKeywords, settings)
    from . import launcher
    from .certification import CertifyConfig, settings_config

    expect(config, CertifyConfig)

    chip = settings_config(**fields, **dev, **io) if config is None else certify_config(config, fields, dev, io)
    return launcher.certify(package, chip, progress=progress, write=write, output=output, overwrite=overwrite,
                            nproc=nproc, dist_timeout=dist_timeout)


@typed_keywords(ChipKeywords)
def to_aihwkit(
    package: str | Path | pkg.Package,
    config: CertifyConfig | None = None,
    **settings: Unpack[ChipKeywords],
) -> nn.Module:
    """The package on aihwkit tiles exactly as certify's aihwkit engine simulates it
    (certification.to_aihwkit); `config` and the keywords as in `certify`
    (`config=CertifyConfig.from_dict(cert["settings"])` rebuilds a certificate's chip)."""
    fields, dev, io = _settings("to_aihwkit", ChipKeywords, settings)
    from . import certification

    expect(config, certification.CertifyConfig)

    if config is None:
        return certification.to_aihwkit(getattr(package, "path", package),
                                        certification.settings_config(**fields, **dev, **io))
    return certification.to_aihwkit(getattr(package, "path", package), certify_config(config, fields, dev, io))
