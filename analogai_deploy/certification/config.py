"""certify's settings: `CertifyConfig`, the keyword settings that make one, and its resolution for a package.

    cfg = settings_config(device="PCM", repeats=20)          # or CertifyConfig(...) directly
    run = resolve("runs/lenet", cfg)                         # the package's mapping, the engine, tiles and times

`settings_config` is the one place that turns certify's keyword settings (the library's and the CLI's) into a
config; every stage function takes the config. `resolve` fills what the package decides (its mapping and
trained-for IO, --match-qat's DAC bits, the engine `auto` picks) and checks everything before the slow part.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._config import ChoiceConfig
from ..analog.mapping import MAPPING_FIELDS, MappingConfig, package_mapping
from ..errors import UsageError, unknown
from ..hardware.devices import DeviceConfig, IOSettings, fixed_times, rpu_config
from ..metrics import DEFAULT_TIMES, parse_time, parse_times
from .simulators import SIMULATORS

#: the seed's config names (and short forms) accepted as KEY=VALUE overrides
ALIASES = {
    "inference.platform.aihwkit.device": "device", "inference.platform.aihwkit.n_w": "n_w",
    "inference.platform.aihwkit": "aihwkit",
}
#: --repeats auto: start with this many repeats, aim at this 95% CI half-width (percentage points)
AUTO_START = 5
DEFAULT_CI_WIDTH = 1.0

#: `auto` and the engines of simulators.SIMULATORS; the metrics of metrics.METRIC_CHOICES (a test keeps them equal)
Engine = Literal["auto", "aihwkit", "fast"]
Metric = Literal["auto", "accuracy", "agreement", "cosine", "next_token_agreement", "perplexity_ratio"]


@dataclass(frozen=True)
class CertifyConfig(ChoiceConfig):
    """Everything that decides a certificate's numbers (change it with dataclasses.replace).

    data: dataset spec for image packages (default digits); for text packages sentences (default), corpus
        (the shipped held-out English), text:FILE, generated:N (causal LMs) or tokens.
    metric: auto, accuracy, agreement (top-1 vs digital), cosine (outputs vs digital), next_token_agreement or
        perplexity_ratio (causal LMs; see metrics.METRICS for which way each is better).
    times: after programming: 1s, 1h, 1d, 1y or seconds; None = 1s,1h,1d,1y, or the times a device
        model is characterised at (ReRAM: 1s, 1d, 2d).  repeats: Monte Carlo repeats (>= 2 for a gate), or
        "auto": add repeats until the 95% CI half-width at every time is <= ci_width percentage points (of the
        metric x 100), at most max_repeats (the certificate records what was reached).
    max_drop / at: the gate, in percentage points below digital at time `at`, on the lower 95% CI bound.
    limit: evaluate on at most this many test samples (None = the whole test split).
    match_qat: set the DAC bits to the package's QAT activation bits (config["quantization"]["a_bits"]).
    engine: aihwkit (aihwkit's tiles), fast (aihwkit's device model around the fused forward; fast/) or
        auto (default): fast where it is validated for the package and device, else aihwkit (fast.choose).
        `resolve` replaces auto with the engine that runs and says why (`Resolved.engine_reason`).
    mapping: the mapping options (analog/mapping.py); fields left at None come from the package's
        config.json["mapping"] (what it was converted / trained for), whose "io" also fills the IO
        settings not given here. Once resolved, this holds the complete mapping that runs.
    """

    device: DeviceConfig = field(default_factory=DeviceConfig)
    data: str | None = None
    metric: Metric = "auto"
    times: list[str] | None = None
    repeats: int | Literal["auto"] = 10
    ci_width: float | None = None
    max_repeats: int = 200
    seed: int = 0
    max_drop: float | None = None
    at: str = "1d"
    limit: int | None = None
    match_qat: bool = False
    engine: Engine = "auto"
    mapping: MappingConfig = field(default_factory=MappingConfig)

    _choices = {"engine": "engine", "metric": "metric"}

    def __post_init__(self):
        self.set_choices()
        if isinstance(self.repeats, str):
            if self.repeats != "auto":
                raise UsageError(f"`repeats` must be a number or auto, got {self.repeats!r}", "e.g. `repeats=10` or "
                                 "`repeats=auto` `ci_width=1`")
            if self.ci_width is None:  # the default target of repeats=auto, filled once
                object.__setattr__(self, "ci_width", DEFAULT_CI_WIDTH)
            if self.ci_width <= 0:
                raise UsageError(f"`ci_width` must be > 0 percentage points, got {self.ci_width:g}")
            if self.max_repeats < AUTO_START:
                raise UsageError(f"`max_repeats` must be >= {AUTO_START}, got {self.max_repeats}")
        elif self.repeats < 1:
            raise UsageError(f"`repeats` must be >= 1, got {self.repeats}")
        elif self.ci_width is not None:
            raise UsageError(f"`ci_width` is the target of `repeats=auto`, not of a fixed {self.repeats} repeats",
                             f"pass `repeats=auto` `ci_width={self.ci_width:g}`")
        if self.max_drop is not None:
            if self.max_drop < 0:
                raise UsageError(f"`max_drop` must be >= 0 percentage points, got {self.max_drop}")
            if self.repeats != "auto" and self.repeats < 2:
                raise UsageError("a gate judges the lower 95% CI bound, which needs >= 2 repeats", "pass `repeats=10`")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"`limit` must be >= 1, got {self.limit}")
        self.time_points()  # validate early

    def time_points(self, default: str | list[str] | tuple[str, ...] = DEFAULT_TIMES) -> list[tuple[str, float]]:
        points = parse_times(self.times or default)
        if self.max_drop is not None:
            at = parse_time(self.at)
            if all(abs(s - at[1]) > 1e-9 for _, s in points):
                points = sorted(points + [at], key=lambda p: p[1])  # the gate's time is always measured
        return points


def parse_settings(overrides: list[str] | None) -> dict[str, str]:
    """KEY=VALUE strings (the seed's `inference.platform.aihwkit.n_w=0.2` too) -> {setting: value}."""
    out: dict[str, str] = {}
    valid = set(ALIASES) | {"device", "preset", "tile", "repeats", "seed", "times", "data", "metric"} | set(
        f.name for f in IOSettings.__dataclass_fields__.values()) | {f"mapping.{k}" for k in MAPPING_FIELDS}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise UsageError(f"bad override {item!r}", "write KEY=VALUE, e.g. inference.platform.aihwkit.n_w=0.2")
        if key not in valid:
            raise unknown("setting", key, valid)
        key = ALIASES.get(key, key)
        value = value.strip().strip("'\"")
        if key == "aihwkit":  # the seed's on/off switch: certification is aihwkit by definition
            if value.lower() not in ("true", "1", "yes", "on"):
                raise UsageError("inference.platform.aihwkit=false: certify always runs on aihwkit",
                                 "drop that override")
            continue
        out[key] = value
    return out


def implied_device(device: str | None, device_file: str | Path | None) -> str:
    """`device`, or what leaving it out means: custom with a device file, else PCM."""
    return device if device is not None else "custom" if device_file is not None else "PCM"


def device_config(device: str | DeviceConfig | None, device_file: str | Path | None, preset: str | None, tile: str,
                  io: dict[str, Any]) -> DeviceConfig:
    """The DeviceConfig of the keyword settings (`device` may be one already; then nothing may go beside it).
    No `device`: PCM, or custom when a `device_file` is given."""
    if isinstance(device, DeviceConfig):
        extra = [k for k, v in io.items() if v is not None] + (["preset"] if preset else []) + (
            ["tile"] if tile != "auto" else []) + (["device_file"] if device_file else [])
        if extra:
            raise UsageError(f"{', '.join(extra)} given beside a DeviceConfig", "set them inside the DeviceConfig")
        return device
    ioset = IOSettings.from_dict({k: v for k, v in io.items() if v is not None})
    device = implied_device(device, device_file)
    if device_file is not None:
        if str(device).lower() != "custom":
            raise UsageError(f"`device_file` goes with `device=custom` (got `device={device}`)",
                             "a device file is a custom device: drop `device`, or drop `device_file`")
        return DeviceConfig.from_file(device_file, io=ioset, preset=preset, tile=tile)
    return DeviceConfig(name=device, io=ioset, preset=preset, tile=tile)


def mapping_config(mapping: MappingConfig | dict[str, Any] | None) -> MappingConfig:
    if mapping is None:
        return MappingConfig()
    if isinstance(mapping, MappingConfig):
        return mapping
    return MappingConfig.from_dict(mapping, where="mapping.")


def settings_config(
    config: CertifyConfig | None = None,
    *,
    device: str | DeviceConfig | None = None,
    data: str | None = None,
    times: str | list[str] | None = None,
    repeats: int | str = 10,
    seed: int = 0,
    ci_width: float | None = None,
    max_repeats: int = 200,
    max_drop: float | None = None,
    at: str = "1d",
    metric: str = "auto",
    preset: str | None = None,
    tile: str = "auto",
    device_file: str | Path | None = None,
    match_qat: bool = False,
    limit: int | None = None,
    engine: str = "auto",
    mapping: MappingConfig | dict[str, Any] | None = None,
    **io: Any,
) -> CertifyConfig:
    """certify's keyword settings as a CertifyConfig, or `config` itself (then no setting may go beside it:
    it would be dropped without a word). `io`: IOSettings fields (dac_bits, adc_bits, out_noise, tile_size,
    drift_compensation, n_w, w_noise_type)."""
    if config is not None and io:
        raise UsageError(f"{', '.join(io)} given beside a CertifyConfig", "set them in config.device.io")
    if config is not None:
        given = {"device": device is not None, "data": data is not None, "times": times is not None,
                 "repeats": repeats != 10, "seed": seed != 0, "ci_width": ci_width is not None,
                 "max_repeats": max_repeats != 200, "max_drop": max_drop is not None, "at": at != "1d",
                 "metric": metric != "auto", "preset": preset is not None, "tile": tile != "auto",
                 "device_file": device_file is not None, "match_qat": match_qat, "limit": limit is not None,
                 "engine": engine != "auto"}
        beside = [name for name, set_ in given.items() if set_]
        if beside:
            raise UsageError(f"{', '.join(f'`{n}`' for n in beside)} given beside a CertifyConfig, which sets them",
                             "set them in the config (dataclasses.replace), or pass no config")
    cfg = config or CertifyConfig(
        device=device_config(device, device_file, preset, tile, io), data=data, metric=metric,
        times=[times] if isinstance(times, (int, float)) else times, repeats=repeats, seed=seed,
        max_drop=max_drop, at=at, limit=limit, match_qat=match_qat, engine=engine, ci_width=ci_width,
        max_repeats=max_repeats, mapping=mapping_config(mapping),
    )
    if config is not None and mapping is not None:
        raise UsageError("mapping given beside a CertifyConfig", "set it in config.mapping")
    if isinstance(cfg.times, str):
        cfg = dataclasses.replace(cfg, times=cfg.times.split(","))
    return cfg


@dataclass(frozen=True)
class Resolved:
    """A CertifyConfig resolved for one package: what runs, on which tiles, at which times."""

    package: Path | str  # the package folder
    config: CertifyConfig  # complete mapping, IO filled, engine named
    tile: str  # the aihwkit tile kind (the fast engine reproduces the torch tile)
    rpu: Any  # devices.rpu_config of the device, tile and mapping
    times: list[tuple[str, float]]
    engine_reason: str = "named"  # why this engine runs: named, or the default's choice and why


def resolve(package: Any, cfg: CertifyConfig) -> Resolved:
    """`cfg` resolved for `package` (a folder or a Package) and checked before the slow part starts (the
    launcher checks it before it spawns processes)."""
    package = getattr(package, "path", package)
    cfg, reason = resolve_config(package, cfg)
    tile = SIMULATORS[cfg.engine].tile(cfg.device)
    rpu = rpu_config(cfg.device, tile, cfg.mapping)
    return Resolved(package, cfg, tile, rpu, time_points(cfg, cfg.device, rpu), reason)


def resolve_config(package: str | Path, cfg: CertifyConfig) -> tuple[CertifyConfig, str]:
    """(`cfg` with --match-qat applied, the package's mapping and trained-for IO under it and `auto` replaced by
    the engine that runs, why that engine)."""
    from .. import package as pkg_io

    cfg = CertifyConfig.from_dict(cfg.to_dict())  # every value in its declared type, as the certificate records it
    config = pkg_io.read_config(package)
    if cfg.match_qat:
        cfg = _match_qat(cfg, config)
    cfg = dataclasses.replace(cfg, mapping=cfg.mapping.over(package_mapping(config)))
    cfg = _package_io(cfg)
    if cfg.engine != "auto":
        return cfg, "named"
    from ..analog.placement import Placement
    from .fast import choose

    placement = Placement.from_config(config) if "placement" in config else None
    engine, reason = choose(cfg.device, rpu_config(cfg.device, "torch", cfg.mapping), placement)
    return dataclasses.replace(cfg, engine=engine), reason


def _with_io(cfg: CertifyConfig, **io: Any) -> CertifyConfig:
    dev = cfg.device
    return dataclasses.replace(cfg, device=dataclasses.replace(dev, io=dataclasses.replace(dev.io, **io)))


def _match_qat(cfg: CertifyConfig, pkg_config: dict[str, Any]) -> CertifyConfig:
    """--match-qat: the DAC resolves what QAT trained the activations for (a_bits)."""
    from .. import package as pkg_io

    quant = pkg_io.section(pkg_config, "quantization")
    if not quant:
        raise UsageError("`match_qat`: this package has no quantization section with a_bits",
                         "recover it with a QAT recipe first, or drop `match_qat`")
    io = cfg.device.io
    if io.dac_bits is not None and io.dac_bits != quant.a_bits:
        raise UsageError(f"`match_qat` sets `dac_bits={quant.a_bits}` but `dac_bits={io.dac_bits}` was also given",
                         "pass one of them")
    return _with_io(cfg, dac_bits=quant.a_bits)


def _package_io(cfg: CertifyConfig) -> CertifyConfig:
    """The IO settings the package was trained for fill those not given (a preset or the ideal device
    brings its own periphery, so they are left alone there)."""
    dev = cfg.device
    if dev.preset or dev.name == "ideal":
        return cfg
    fill = {key: value for key, value in cfg.mapping.io.to_dict().items()
            if value is not None and getattr(dev.io, key) is None and (
                dev.custom is None or getattr(dev.custom.io, key) is None)}
    return _with_io(cfg, **fill) if fill else cfg


def time_points(cfg: CertifyConfig, device: DeviceConfig, rpu) -> list[tuple[str, float]]:
    """The times to measure; a device model characterised at fixed times only (ReRAM) accepts just those."""
    fixed = fixed_times(rpu)
    points = cfg.time_points([f"{t:g}" for t in fixed] if fixed else DEFAULT_TIMES)
    if fixed:
        labels = [parse_times([f"{t:g}"])[0][0] for t in fixed]
        bad = [label for label, seconds in points if seconds not in fixed]
        if bad:
            raise UsageError(f"{device.label} ({type(rpu.noise_model).__name__}) is characterised only at "
                             f"{', '.join(labels)}, not {', '.join(bad)}", f"pass `times={','.join(labels)}`")
    return points
