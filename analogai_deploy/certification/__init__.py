"""Certify a package on aihwkit: Monte Carlo accuracy of the model on simulated analog chips under drift.

    cert = analogai_deploy.certify("runs/lenet", device="PCM", data="digits", times="1s,1h,1d,1y", repeats=10)
    cert["results"][2]["mean"], cert.passed

The package's clean digital weights go on aihwkit tiles once, exactly as config.json's placement
record says (tiles.py: only the placement's analog modules, every layer kind convert makes analog;
everything else stays digital); the certificate states the placement's sha256 and the layers it
simulated, and a planned layer that cannot be simulated stops certify (exit 1) naming it. Each
Monte Carlo repeat r seeds torch with seed + r, programs the tiles afresh (`program_analog_weights`:
new programming noise) and drifts them to every time in turn (`drift_analog_weights(t)` always
starts from the programmed state). Before each drift torch is reseeded with `stream_seed(seed, r, t)`,
so the value at (r, t) depends only on (seed, r, t): not on which other times were requested, nor
on how repeats are split across processes and merged. certificate.json, certificate.png and the card are written into the package.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io as _io
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._config import StrictConfig
from .._marks import mark
from ..errors import UsageError, unknown
from ..analog import outliers
from ..metrics import statistics
from ..hardware.devices import (DEVICES, PRESETS, CustomDevice, DeviceConfig, IOSettings, describe, fixed_times,
                      rpu_config)
from ..hardware.probe import choose_tile
from ..analog.mapping import MAPPING_FIELDS, MappingConfig, package_mapping
from .simulated import Mapped, map_digital, on_tiles
from ..data.eval_set import EvalSet, load_eval_set
from ..metrics import (METRIC_CHOICES, METRICS, half_width, metric_info, normalised, parse_time, parse_times,
                       resolve_metric, run, score, stats)

__all__ = ["certify", "sweep", "to_aihwkit", "CertifyConfig", "Certificate", "DeviceConfig", "IOSettings", "CustomDevice", "MappingConfig",
           "DEVICES", "PRESETS", "METRICS", "apply_overrides", "parse_sweep"]

DEFAULT_TIMES = "1s,1h,1d,1y"
CERTIFICATE_PNG = "certificate.png"
SWEEP_CSV, SWEEP_PNG = "sweep.csv", "sweep.png"
SWEEPABLE = ("n_w", "out_noise", "dac_bits", "adc_bits", "tile_size")
#: a torch deprecation aihwkit's HermesNoiseModel triggers on every drift; not the user's concern
_AIHWKIT_NOISE = "Using a non-tuple sequence for multidimensional indexing"
#: the seed's config names (and short forms) accepted as KEY=VALUE overrides
ALIASES = {
    "inference.platform.aihwkit.device": "device", "inference.platform.aihwkit.n_w": "n_w",
    "inference.platform.aihwkit": "aihwkit",
}


#: --repeats auto: start with this many repeats, aim at this 95% CI half-width (percentage points)
AUTO_START = 5
DEFAULT_CI_WIDTH = 1.0


@dataclass
class CertifyConfig(StrictConfig):
    """Everything that decides a certificate's numbers.

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
    engine: aihwkit (aihwkit's tiles), fast (aihwkit's device model around the fused forward; fast.py) or
        auto (default): fast where it is validated for the package and device, else aihwkit (fast.choose).
        Resolution (`_resolved`) replaces auto with the engine that runs and sets `engine_reason`.
    mapping: the mapping options (mapping.py); fields left at None come from the package's
        config.json["mapping"] (what it was converted / trained for), whose "io" also fills the IO
        settings not given here. Once resolved, this holds the complete mapping that runs.
    """

    device: DeviceConfig = field(default_factory=DeviceConfig)
    data: str | None = None
    metric: str = "auto"
    times: list[str] | None = None
    repeats: int | str = 10
    ci_width: float | None = None
    max_repeats: int = 200
    seed: int = 0
    max_drop: float | None = None
    at: str = "1d"
    limit: int | None = None
    match_qat: bool = False
    engine: str = "auto"
    mapping: MappingConfig = field(default_factory=MappingConfig)

    def __post_init__(self):
        from .fast import DEFAULT_ENGINE, ENGINES

        if self.engine not in (*ENGINES, DEFAULT_ENGINE):
            raise unknown("engine", self.engine, (*ENGINES, DEFAULT_ENGINE))
        self.engine_reason = "named"  # why this engine runs (not a setting: `_resolved` says it for auto)
        if isinstance(self.repeats, str):
            if self.repeats != "auto":
                raise UsageError(f"`repeats` must be a number or auto, got {self.repeats!r}", "e.g. `repeats=10` or "
                                 "`repeats=auto` `ci_width=1`")
            self.ci_width = DEFAULT_CI_WIDTH if self.ci_width is None else self.ci_width
            if self.ci_width <= 0:
                raise UsageError(f"`ci_width` must be > 0 percentage points, got {self.ci_width:g}")
            if self.max_repeats < AUTO_START:
                raise UsageError(f"`max_repeats` must be >= {AUTO_START}, got {self.max_repeats}")
        elif self.repeats < 1:
            raise UsageError(f"`repeats` must be >= 1, got {self.repeats}")
        elif self.ci_width is not None:
            raise UsageError(f"`ci_width` is the target of `repeats=auto`, not of a fixed {self.repeats} repeats",
                             f"pass `repeats=auto` `ci_width={self.ci_width:g}`")
        if self.metric not in METRIC_CHOICES:
            raise unknown("metric", self.metric, METRIC_CHOICES)
        if self.max_drop is not None:
            if self.max_drop < 0:
                raise UsageError(f"`max_drop` must be >= 0 percentage points, got {self.max_drop}")
            if self.repeats != "auto" and self.repeats < 2:
                raise UsageError("a gate judges the lower 95% CI bound, which needs >= 2 repeats", "pass `repeats=10`")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"limit must be >= 1, got {self.limit}")
        self.time_points()  # validate early

    def time_points(self, default: str | list[str] = DEFAULT_TIMES) -> list[tuple[str, float]]:
        points = parse_times(self.times or default)
        if self.max_drop is not None:
            at = parse_time(self.at)
            if all(abs(s - at[1]) > 1e-9 for _, s in points):
                points = sorted(points + [at], key=lambda p: p[1])  # the gate's time is always measured
        return points


class Certificate(dict):
    """certificate.json as a dict, plus `path` (where it was written), `passed`, `timing` and, for a text
    package that missed its gate, what the digital-outlier split measured (`split_hint`). The last two are not
    saved: timings vary run to run, and the hint is another mapping's number."""

    path: Path | None = None
    timing: dict[str, float] | None = None
    split_hint: dict[str, Any] | None = None

    @property
    def passed(self) -> bool | None:
        return self.get("verdict", {}).get("passed")

    def result(self, time_label: str) -> dict[str, Any]:
        seconds = parse_time(time_label)[1]
        for r in self["results"]:
            if abs(r["seconds"] - seconds) < 1e-9:
                return r
        raise KeyError(time_label)


def apply_overrides(overrides: list[str] | None) -> dict[str, str]:
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


def _device_config(device: str | DeviceConfig, device_file: str | Path | None, preset: str | None, tile: str,
                   io: dict[str, Any]) -> DeviceConfig:
    if isinstance(device, DeviceConfig):
        extra = [k for k, v in io.items() if v is not None] + (["preset"] if preset else []) + (
            ["tile"] if tile != "auto" else []) + (["device_file"] if device_file else [])
        if extra:
            raise UsageError(f"{', '.join(extra)} given beside a DeviceConfig", "set them inside the DeviceConfig")
        return device
    ioset = IOSettings.from_dict({k: v for k, v in io.items() if v is not None})
    if device_file is not None:
        if str(device).lower() != "custom":
            raise UsageError(f"`device_file` goes with `device=custom` (got `device={device}`)")
        return DeviceConfig.from_file(device_file, io=ioset, preset=preset, tile=tile)
    return DeviceConfig(name=device, io=ioset, preset=preset, tile=tile)


def _match_qat(cfg: CertifyConfig, pkg_config: dict[str, Any]) -> None:
    """--match-qat: the DAC resolves what QAT trained the activations for (a_bits)."""
    quant = pkg_config.get("quantization")
    if not quant or not quant.get("a_bits"):
        raise UsageError("`match_qat`: this package has no quantization section with a_bits",
                         "recover it with a QAT recipe first, or drop `match_qat`")
    io = cfg.device.io
    if io.dac_bits is not None and io.dac_bits != int(quant["a_bits"]):
        raise UsageError(f"`match_qat` sets `dac_bits={quant['a_bits']}` but `dac_bits={io.dac_bits}` was also given",
                         "pass one of them")
    io.dac_bits = int(quant["a_bits"])


def _resolved(package: str | Path, cfg: CertifyConfig) -> CertifyConfig:
    """A private copy of `cfg` with --match-qat applied (it reads the package's quantization section)."""
    from .. import package as pkg_io

    cfg = CertifyConfig.from_dict(cfg.to_dict())
    config = pkg_io.read_config(package)
    if cfg.match_qat:
        _match_qat(cfg, config)
    cfg.mapping = cfg.mapping.over(package_mapping(config))
    _package_io(cfg)
    if cfg.engine == "auto":
        from ..analog.placement import Placement
        from .fast import choose

        placement = Placement.from_config(config) if "placement" in config else None
        cfg.engine, cfg.engine_reason = choose(cfg.device, rpu_config(cfg.device, "torch", cfg.mapping), placement)
    return cfg


def _package_io(cfg: CertifyConfig) -> None:
    """The IO settings the package was trained for fill those not given (a preset or the ideal device
    brings its own periphery, so they are left alone there)."""
    dev = cfg.device
    if dev.preset or dev.name == "ideal":
        return
    for key, value in cfg.mapping.io.to_dict().items():
        if value is not None and getattr(dev.io, key) is None and (
                dev.custom is None or getattr(dev.custom.io, key) is None):
            setattr(dev.io, key, value)


@dataclass
class _Bench:
    """What every Monte Carlo run of one package shares: the digital model, the inputs, the reference."""

    path: Path
    config: dict[str, Any]
    digital: nn.Module
    data: EvalSet
    metric: str
    reference: torch.Tensor | None
    digital_value: float
    digital_seconds: float
    placement: Any = None  # analog.placement.Placement: what goes on tiles
    mapped: Mapped | None = None  # the digital model as mapped (simulated.py), what both engines start from
    mapping_record: dict[str, Any] = field(default_factory=dict)


def _digital(package: str | Path):
    """The package (its weights' sha256 verified) and its model with every analog layer digital again."""
    from .. import package as pkg_io
    from ..analog.convert import to_digital

    pkg = pkg_io.load(package)
    return pkg, to_digital(pkg.model).eval()


def _bench(package: str | Path, cfg: CertifyConfig) -> _Bench:
    from .. import package as pkg_io

    pkg, digital = _digital(package)
    # a distilled package's reference (load just verified it); it also writes generated:N text
    teacher = pkg_io.load_reference(pkg, verify_hash=False)
    data = load_eval_set(pkg.path, pkg.config, cfg.data, seed=cfg.seed, limit=cfg.limit, model=teacher or digital)
    metric = resolve_metric(cfg.metric, pkg.config, data)
    if metric == "accuracy" and data.num_classes and pkg.config.get("num_classes") not in (None, data.num_classes):
        raise UsageError(f"the package has {pkg.config['num_classes']} classes but {data.spec} has {data.num_classes}",
                         "certify on the dataset the model was trained for, or label-free: `metric=agreement`")
    start = time.perf_counter()
    outputs = run(digital, data)
    seconds = time.perf_counter() - start
    reference = None
    if metric != "accuracy":  # label-free: the model distilled from (package.REFERENCE), else the package itself
        reference = outputs if teacher is None else run(teacher, data)
    value = score(metric, outputs, data, reference)
    bench = _Bench(pkg.path, pkg.config, digital, data, metric, reference, value, seconds, pkg.placement)
    _map(bench, cfg)
    return bench


def _map(bench: _Bench, cfg: CertifyConfig) -> None:
    """The mapping's digital side, shared by both engines and `to_aihwkit` (simulated.map_digital); and what
    the certificate records about it."""
    m = cfg.mapping.complete()
    mapped = bench.mapped = map_digital(bench.path, bench.config, bench.digital, bench.placement, m, cfg.data)
    clipped = mapped.clipped
    record: dict[str, Any] = {**m.to_dict(), "source": "package" if "mapping" in bench.config else "legacy (no "
                              "mapping in config.json)", "overridden": _overridden(bench.config, m)}
    trained_io = {k: v for k, v in m.io.to_dict().items() if v is not None}
    own_io = cfg.device.preset or cfg.device.name == "ideal"  # their own periphery (see _package_io)
    io_over = {} if own_io else {k: getattr(cfg.device.io, k) for k, v in trained_io.items()
                                 if getattr(cfg.device.io, k) != v}
    if io_over:  # IO given on the command line over what the package was trained for
        record["overridden"]["io"] = io_over
    if clipped:
        record["clipped_fraction"] = sum(clipped.values()) / len(clipped)
    if mapped.calibrated is not None:
        record["calibrated"] = mapped.calibrated
    if m.outliers == "digital":  # what the split costs: shares of the tiles' weights and MACs, sparse bytes
        record["digital_outliers"] = split_cost(mapped, bench)
    if clipped:  # what the mapped weights alone cost, before any analog noise (the ceiling of this mapping)
        handles = mapped.install(mapped.model)
        try:
            outputs = run(mapped.model, bench.data)
        finally:
            for h in handles:
                h.remove()
        record["digital_mapped"] = {bench.metric: score(bench.metric, outputs, bench.data, bench.reference)}
    bench.mapping_record = record


def split_cost(mapped: Mapped, bench: _Bench) -> dict[str, Any]:
    """The digital-outlier split's cost (outliers.cost), its MACs counted on the first evaluation batch."""
    vectors, per = outliers.macs_per_vector(mapped.model, bench.placement, bench.data.batches[0])
    return outliers.cost(mapped.outliers, bench.placement, vectors, per)


def _overridden(config: dict[str, Any], m: MappingConfig) -> dict[str, Any]:
    """The mapping fields (and trained-for IO) that differ from what the package records."""
    base = package_mapping(config).complete().to_dict()
    mine = m.to_dict()
    return {k: v for k, v in mine.items() if k != "io" and base.get(k) != v}


def _time_points(cfg: CertifyConfig, device: DeviceConfig, rpu) -> list[tuple[str, float]]:
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


def stream_seed(seed: int, repeat: int, seconds: float) -> int:
    """The seed of the draws at (repeat, time) after programming (read noise, drift, output noise):
    a hash of the three, so adding or dropping a time point leaves every other value as it was."""
    digest = hashlib.sha256(f"{int(seed)}:{int(repeat)}:{float(seconds)!r}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch.manual_seed takes < 2**63


STREAMS = "programming: torch.manual_seed(seed + r); time t: torch.manual_seed(stream_seed(seed, r, t))"


def monte_carlo(analog: nn.Module, bench: _Bench, times: list[tuple[str, float]], repeats: int, seed: int,
                progress: Callable[..., Any] | None = None, first_repeat: int = 0) -> list[list[float]]:
    """values[time][repeat] for repeats first_repeat .. first_repeat + repeats - 1 (programmed with seed + r,
    each time point then drawn from its own stream, `stream_seed`)."""
    if getattr(analog, "fast_engine", False):  # fast.FastModel: aihwkit's device model around the fused forward
        program, drift, desc = analog.program, analog.drift, "certify (fast)"
    else:
        def program():
            analog.eval()
            analog.program_analog_weights()  # fresh programming noise for this repeat

        drift, desc = analog.drift_analog_weights, "certify"
    values = [[0.0] * repeats for _ in times]
    bar = progress(total=repeats * len(times), desc=desc, unit="eval") if progress else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_AIHWKIT_NOISE, category=UserWarning)
        try:
            for i in range(repeats):
                r = first_repeat + i
                torch.manual_seed(seed + r)
                program()
                for j, (_, seconds) in enumerate(times):
                    torch.manual_seed(stream_seed(seed, r, seconds))
                    drift(seconds)
                    values[j][i] = score(bench.metric, run(analog, bench.data), bench.data, bench.reference)
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return values


def _spread(analog: nn.Module, bench: _Bench, times: list[tuple[str, float]], repeats: int, seed: int,
            progress: Callable[..., Any] | None = None, start: int = 0) -> list[list[float]]:
    """`monte_carlo` of repeats start .. start + repeats - 1 over every rank of a distributed run: each its
    block of repeats, merged in repeat order."""
    from .. import distributed

    if distributed.world() == 1:
        return monte_carlo(analog, bench, times, repeats, seed, progress, first_repeat=start)
    mine = distributed.share(repeats)
    values: list[list[float]] = []
    with distributed.guard():  # a rank that fails here stops every rank with its message
        values = monte_carlo(analog, bench, times, len(mine), seed, progress if distributed.is_main() else None,
                             first_repeat=start + mine.start)
    parts = distributed.all_gather(values)
    return [[v for part in parts for v in part[j]] for j in range(len(times))]


def _adaptive(analog: nn.Module, bench: _Bench, times: list[tuple[str, float]], cfg: CertifyConfig,
              progress: Callable[..., Any] | None = None) -> tuple[list[list[float]], dict[str, Any]]:
    """--repeats auto: AUTO_START repeats, then more until every time's 95% CI half-width is <= ci_width pp
    (or max_repeats). Each step asks for what the current spread says is still missing (t * sd / W)^2, at
    least 2 and at most as many as there are; repeat r is seeded seed + r as always, so the values equal a
    fixed-repeat run with the final count."""
    target = cfg.ci_width / 100.0
    values = _spread(analog, bench, times, AUTO_START, cfg.seed, progress)
    while True:
        n = len(values[0])
        widths = [half_width(v) for v in values]
        if max(widths) <= target or n >= cfg.max_repeats:
            break
        # half_width is t * sd / sqrt(n): (t * sd / W)^2 repeats bring it to W
        need = max(math.ceil(n * (w / target) ** 2) for w in widths)
        more = min(cfg.max_repeats - n, max(2, min(need - n, n)))
        extra = _spread(analog, bench, times, more, cfg.seed, progress, start=n)
        values = [a + b for a, b in zip(values, extra)]
    record = {"ci_width_pp": cfg.ci_width, "max_repeats": cfg.max_repeats, "repeats": len(values[0]),
              "reached": max(widths) <= target,
              "half_width_pp": {label: round(100 * w, 4) for (label, _), w in zip(times, widths)}}
    return values, record


def _tile_for(cfg: CertifyConfig, device: DeviceConfig | None = None) -> str:
    """The tile kind that runs `device`; the fast engine reproduces aihwkit's PyTorch tile."""
    device = device or cfg.device
    if cfg.engine == "fast":
        from .fast import check_supported

        check_supported(device)
        choose_tile(DeviceConfig.from_dict({**device.to_dict(), "tile": "torch"}))  # aihwkit must be usable
        return "torch"
    return choose_tile(device)


def _to_aihwkit(digital: nn.Module, rpu, placement=None) -> nn.Module:
    """`digital` on aihwkit tiles as `placement` says (benches and tests on a bare model may omit it:
    then the default conversion's placement of that model)."""
    from ..analog.placement import plan
    from ..analog.tiles import to_aihwkit

    return to_aihwkit(digital, placement or plan(digital), rpu)[0]


def _simulator(cfg: CertifyConfig, bench: _Bench | nn.Module, rpu):
    """The model on simulated tiles (benches: `_simulate` also says which layers)."""
    if isinstance(bench, nn.Module):
        from ..analog.placement import plan

        bench = _Bench(Path("."), {}, bench, None, "", None, 0.0, 0.0, plan(bench))
    return _simulate(cfg, bench, rpu)[0]


def _simulate(cfg: CertifyConfig, bench: _Bench, rpu):
    """The model on simulated tiles, and the placement layers it simulates (in placement order).
    Both engines start from the mapped digital model (`_map`) and get its digital parts installed; the
    aihwkit engine's model is `to_aihwkit`'s (simulated.on_tiles)."""
    mapped = bench.mapped or Mapped(bench.digital)
    if cfg.engine == "fast":
        from .fast import FastModel

        analog = FastModel(mapped.model, rpu, placement=bench.placement)  # the record's layers, not re-derived
        mapped.install(analog.model, fast=True)
        return analog, analog.simulated
    return on_tiles(mapped, bench.placement, rpu)


def _conversion(cfg: CertifyConfig, analog: nn.Module, bench: _Bench, simulated: list[str]) -> dict[str, Any]:
    if cfg.engine == "fast":
        return analog.conversion()
    from ..analog.tiles import conversion

    return conversion(analog, bench.placement, simulated)


def _placement_block(bench: _Bench, simulated: list[str]) -> dict[str, Any]:
    """What the certificate simulated: the record's hash and the layers put on tiles (= its analog list)."""
    block = {"sha256": bench.placement.sha256, "simulated": list(simulated)}
    if bench.placement.derived:
        block["derived"] = True  # the package predates the record; derived from its analog settings at load
    return block


def _normalised_note(bench: _Bench) -> str | None:
    """Why the normalised accuracy is left out (metrics/statistics.py); None where it is given or does not apply."""
    if not statistics.is_proportion(bench.metric):
        return None
    classes = bench.data.num_classes or bench.config.get("num_classes")
    return statistics.normalised_note(bench.digital_value, classes, bench.data.n)


def _results(bench: _Bench, times: list[tuple[str, float]], values: list[list[float]]) -> list[dict[str, Any]]:
    classes = bench.data.num_classes or bench.config.get("num_classes")
    given = statistics.is_proportion(bench.metric) and _normalised_note(bench) is None
    rows = []
    for (label, seconds), vals in zip(times, values):
        s = stats(vals, metric_info(bench.metric).bounds)
        norm = normalised(s["mean"], bench.digital_value, classes) if given else None
        rows.append({"time": label, "seconds": seconds, **s, "normalised": norm, "values": vals})
    return rows


def _verdict(cfg: CertifyConfig, digital: float, results: list[dict[str, Any]],
             metric_name: str = "accuracy") -> dict[str, Any] | None:
    if cfg.max_drop is None:
        return None
    label, seconds = parse_time(cfg.at)
    row = next(r for r in results if abs(r["seconds"] - seconds) < 1e-9)
    metric = metric_info(metric_name)
    threshold = metric.threshold(digital, cfg.max_drop)
    drop_pp = metric.drop_pp(digital, row["ci95"])  # in the metric's bad direction, on the CI bound on that side
    side = "lower" if metric.higher_is_better else "upper"
    return {
        "rule": f"max drop {cfg.max_drop:g} pp{'' if metric_name == 'accuracy' else ' of ' + metric_name} at {label} "
                f"({side} 95% CI)",
        "metric": metric_name, "higher_is_better": metric.higher_is_better,
        "max_drop_pp": cfg.max_drop, "at": label, "threshold": threshold,
        "drop_pp": drop_pp, "passed": bool(drop_pp <= cfg.max_drop + 1e-9),
    }


#: how many Monte Carlo repeats (the certificate's first seeds) the split hint measures
HINT_REPEATS = 3


def split_hint(cfg: CertifyConfig, bench: _Bench, rpu, verdict: dict[str, Any],
               results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A text package that missed its gate on the pure-analog mapping: the gate measured again with the
    digital-outlier split (outliers.py) at the mapping's bound, at the gate's time only, on the same inputs
    and the certificate's first HINT_REPEATS seeds - the numbers `certify --outliers digital --times AT
    --repeats 3` gives. None where the gate passed, the split already ran, or the package is not text."""
    m = cfg.mapping.complete()
    if verdict["passed"] or m.outliers == "digital" or bench.config.get("input", {}).get("kind") != "text":
        return None
    repeats = HINT_REPEATS if cfg.repeats == "auto" else min(HINT_REPEATS, cfg.repeats)  # a gate has >= 2
    split = CertifyConfig.from_dict({**cfg.to_dict(), "repeats": repeats, "ci_width": None, "times": [cfg.at],
                                     "mapping": {**m.to_dict(), "outliers": "digital"}})
    trial = _Bench(bench.path, bench.config, bench.digital, bench.data, bench.metric, bench.reference,
                   bench.digital_value, bench.digital_seconds, bench.placement)
    _map(trial, split)
    analog, _ = _simulate(split, trial, rpu)
    times = split.time_points()
    row = _results(trial, times, _spread(analog, trial, times, split.repeats, split.seed))[0]
    gate = _verdict(split, bench.digital_value, [row], bench.metric)
    share = trial.mapping_record["digital_outliers"]
    plain = next(r for r in results if abs(r["seconds"] - row["seconds"]) < 1e-9)["values"][:split.repeats]
    return {"outlier_std": m.outlier_std, "at": gate["at"], "repeats": split.repeats, "seeds":
            [split.seed + r for r in range(split.repeats)], "mean": row["mean"], "ci95": row["ci95"],
            "pure_analog_mean": sum(plain) / len(plain),  # the certificate's own values at those seeds
            "drop_pp": gate["drop_pp"], "passed": gate["passed"],
            **{k: share[k] for k in ("weight_share", "mac_share", "sparse_bytes")}}


def hint_line(hint: dict[str, Any], metric: str, max_drop: float) -> str:
    """The split hint in one line: what it measured and whether the gate would pass."""
    fmt = metric_info(metric).format
    verdict = "would pass" if hint["passed"] else "would still miss"
    kib = hint["sparse_bytes"] / 1024
    return (f"digital-outlier split, measured: with the weights beyond {hint['outlier_std']:g} std of each tile "
            f"column digital ({hint['weight_share']:.2%} of the tile weights, {hint['mac_share']:.2%} of the MACs, "
            f"{kib:.1f} KiB sparse) {metric} at {hint['at']} is {fmt(hint['mean'])} against "
            f"{fmt(hint['pure_analog_mean'])} pure analog (the same inputs and first {hint['repeats']} seeds), "
            f"{hint['drop_pp']:.2f} pp below digital on the 95% CI: {verdict} --max-drop {max_drop:g} "
            "(certify --outliers digital)")


def _digital_block(bench: _Bench) -> dict[str, Any]:
    return {bench.metric: bench.digital_value}


def _data_block(bench: _Bench) -> dict[str, Any]:
    split = "test" if bench.data.labels is not None else "label-free"
    if bench.data.split not in (None, "test", "built-in"):
        split = f"{split}, {bench.data.split}"
    block = {"spec": bench.data.spec, "fingerprint": bench.data.fingerprint, "split": split, "n": bench.data.n}
    if bench.data.label_names and bench.metric in ("accuracy", "agreement") and bench.data.kind in ("image", "logits"):
        block["labels"] = list(bench.data.label_names)  # what each output is: the package's names (labels.py)
    if bench.metric != "accuracy":  # what the label-free metric compares with (_bench)
        ref = bench.config.get("reference")
        block["reference"] = ({"model": "the weights the package was distilled from", "file": ref["file"],
                               "sha256": ref["sha256"]} if ref else {"model": "the package's own digital model"})
    return block


def resolve(
    package: str | Path,
    device: str | DeviceConfig = "PCM",
    data: str | None = None,
    times: str | list[str] | None = None,
    repeats: int | str = 10,
    seed: int = 0,
    *,
    config: CertifyConfig | None = None,
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
) -> tuple[str | Path, CertifyConfig, str, Any, list[tuple[str, float]]]:
    """`certify`'s arguments checked and resolved before the slow part starts (the launcher checks them
    before it spawns processes): (package folder, config, tile kind, rpu config, time points)."""
    if config is not None and io:
        raise UsageError(f"{', '.join(io)} given beside a CertifyConfig", "set them in config.device.io")
    if config is not None:  # a setting beside the config would be dropped without a word: refuse it
        given = {"device": device != "PCM", "data": data is not None, "times": times is not None,
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
        device=_device_config(device, device_file, preset, tile, io), data=data, metric=metric,
        times=[times] if isinstance(times, (int, float)) else times, repeats=repeats, seed=seed,
        max_drop=max_drop, at=at, limit=limit, match_qat=match_qat, engine=engine, ci_width=ci_width,
        max_repeats=max_repeats,
        mapping=_mapping_arg(mapping),
    )
    if config is not None and mapping is not None:
        raise UsageError("mapping given beside a CertifyConfig", "set it in config.mapping")
    if isinstance(cfg.times, str):
        cfg.times = cfg.times.split(",")
    package = getattr(package, "path", package)  # a Package object or its folder
    cfg = _resolved(package, cfg)
    tile_kind = _tile_for(cfg)
    rpu = rpu_config(cfg.device, tile_kind, cfg.mapping)
    return package, cfg, tile_kind, rpu, _time_points(cfg, cfg.device, rpu)


def _mapping_arg(mapping: MappingConfig | dict[str, Any] | None) -> MappingConfig:
    if mapping is None:
        return MappingConfig()
    if isinstance(mapping, MappingConfig):
        return mapping
    return MappingConfig.from_dict(mapping, where="mapping.")


def certify(
    package: str | Path,
    device: str | DeviceConfig = "PCM",
    data: str | None = None,
    times: str | list[str] | None = None,
    repeats: int | str = 10,
    seed: int = 0,
    *,
    config: CertifyConfig | None = None,
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
    progress: Callable[..., Any] | None = None,
    write: bool = True,
    output: str | Path | None = None,
    overwrite: bool = False,
    **io: Any,
) -> Certificate:
    """Monte Carlo certificate of `package` on a simulated analog device; written into the package.

    `device`: PCM, ReRAM, ReRAM-CMO, Hermes-PCM, ideal, custom (+ `device_file`), or a DeviceConfig.
    `io`: IOSettings fields (dac_bits, adc_bits, out_noise, tile_size, drift_compensation, n_w, w_noise_type).
    `data`: default digits for image packages, built-in sentences for text packages (label-free).
    `engine`: aihwkit (its tiles), fast (its device model around the fused forward; see fast.py) or auto
    (default): fast where it is validated for the package and device, else aihwkit; the certificate says
    which ran and why.
    `mapping`: a MappingConfig (or its dict) over the package's config.json["mapping"] (mapping.py).
    `progress(total=..., desc=...)`: a tqdm-like bar factory. Pass `config` to give everything at once.
    This process only (under torchrun the repeats spread over its ranks by themselves);
    `analogai_deploy.certify(..., nproc=N)` (launcher.py) spreads them over N local processes.
    `output`: write a copy of the package with the certificate there (for read-only packages) instead of
    updating `package` in place; an existing package there is replaced only with `overwrite`.
    """
    package, cfg, tile_kind, rpu, times_ = resolve(
        package, device, data, times, repeats, seed, config=config, ci_width=ci_width, max_repeats=max_repeats,
        max_drop=max_drop, at=at, metric=metric,
        preset=preset, tile=tile, device_file=device_file, match_qat=match_qat, limit=limit, engine=engine,
        mapping=mapping, **io)
    dest = destination(package, output, overwrite) if write and _is_main() else None
    bench = _bench(package, cfg)
    mark("work")  # start-up ends here (benchmarks/startup.py): conversion and Monte Carlo are the work
    start = time.perf_counter()
    analog, simulated = _simulate(cfg, bench, rpu)
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    adaptive = None
    if cfg.repeats == "auto":
        values, adaptive = _adaptive(analog, bench, times_, cfg, progress)
    else:
        values = _spread(analog, bench, times_, cfg.repeats, cfg.seed, progress)
    repeats = len(values[0])
    mc_s = time.perf_counter() - start
    mark("work_done")
    from .. import package as pkg_io
    from ..provenance import now, version_of, versions

    results = _results(bench, times_, values)
    cert = Certificate({
        "metric": bench.metric,
        "device": describe(cfg.device, rpu, tile_kind),
        "tile": tile_kind,
        "engine": cfg.engine,
        "engine_reason": cfg.engine_reason,  # named, or the default's choice and why
        "aihwkit": version_of("aihwkit"),
        "reproducible": tile_kind == "torch",
        "data": _data_block(bench),
        "weights_sha256": bench.config["weights"]["sha256"],
        # the model these numbers belong to: an edit of config.json's model-defining part is refused later
        "model_sha256": pkg_io.model_sha256(bench.config),
        "model_sections": pkg_io.model_sections(bench.config),
        "files_sha256": pkg_io.measured_files(bench.path),  # the tokenizer these numbers were measured with
        "seed": cfg.seed,
        "repeats": repeats,
        "seeds": [cfg.seed + r for r in range(repeats)],
        "streams": STREAMS,
        "digital": _digital_block(bench),
        "placement": _placement_block(bench, simulated),
        "mapping": bench.mapping_record,
        "conversion": _conversion(cfg, analog, bench, simulated),
        "results": results,
        "settings": cfg.to_dict(),
        "created": now(),
        "versions": versions(),
    })
    if adaptive is not None:  # how many repeats --repeats auto took, and the CI it reached
        cert["adaptive"] = adaptive
    note = _normalised_note(bench)
    if note:
        cert["normalised_note"] = note
    cert["warnings"] = statistics.warnings(bench.metric, bench.data.n, repeats, results)
    if adaptive is not None and not adaptive["reached"]:
        cert["warnings"].append(f"--repeats auto stopped at --max-repeats {cfg.max_repeats} before every 95% CI "
                                f"half-width was <= {cfg.ci_width:g} pp (widest "
                                f"{max(adaptive['half_width_pp'].values()):.2f} pp)")
    split_warning = outliers.coverage_warning(bench.placement) if bench.mapping_record.get("outliers") == "digital" \
        else None
    if split_warning:
        cert["warnings"].append(split_warning)
    verdict = _verdict(cfg, bench.digital_value, results, bench.metric)
    if verdict is not None:
        cert["verdict"] = verdict
        cert.split_hint = split_hint(cfg, bench, rpu, verdict, results)
    cert.timing = {"convert_s": convert_s, "monte_carlo_s": mc_s,
                   "per_eval_s": mc_s / (repeats * len(times_)), "digital_pass_s": bench.digital_seconds}
    if write and _is_main():  # in a distributed run every rank holds the merged certificate; rank 0 writes it
        cert.path = _write_certificate(bench, cert, dest, overwrite)
    return cert


def to_aihwkit(
    package: str | Path,
    device: str | DeviceConfig = "PCM",
    *,
    config: CertifyConfig | None = None,
    data: str | None = None,
    preset: str | None = None,
    tile: str = "auto",
    device_file: str | Path | None = None,
    match_qat: bool = False,
    mapping: MappingConfig | dict[str, Any] | None = None,
    **io: Any,
) -> nn.Module:
    """The package on aihwkit tiles exactly as certify's aihwkit engine simulates it.

    The package's placement on tiles built by devices.rpu_config for `device` and the mapping (config.json's,
    under `mapping`'s fields), with its digital parts installed on the returned model: weights clipped, input
    scales folded into the tiles and divided out before each DAC (forward pre-hooks), outlier weights beside
    their tiles (forward hooks), calibrated input ranges on the tiles. Arguments as `certify` (`data`: the
    dataset an image package calibrates on; `config=CertifyConfig.from_dict(cert["settings"])` rebuilds a
    certificate's chip). Then, in aihwkit's own terms:

        model = ad.to_aihwkit("runs/minilm", device="PCM")
        model.eval(); model.program_analog_weights(); model.drift_analog_weights(86400)
        out = model(**batch)
    """
    if config is not None:  # the model is aihwkit's, whatever engine the config was certified with
        config = CertifyConfig.from_dict({**config.to_dict(), "engine": "aihwkit"})
    package, cfg, _, rpu, _ = resolve(package, device, data, config=config, preset=preset, tile=tile,
                                      device_file=device_file, match_qat=match_qat, mapping=mapping, **io)
    return _chip(package, cfg, rpu)[0]


def _chip(package: str | Path, cfg: CertifyConfig, rpu) -> tuple[nn.Module, list[str], Any]:
    """`to_aihwkit`'s model, the placement layers it simulates, and the package it came from."""
    pkg, digital = _digital(package)
    mapped = map_digital(pkg.path, pkg.config, digital, pkg.placement, cfg.mapping, cfg.data)
    analog, simulated = on_tiles(mapped, pkg.placement, rpu)
    return analog, simulated, pkg


def destination(package: str | Path, output: str | Path | None, overwrite: bool) -> Path:
    """Where the certified package goes: `package` itself, or a copy at `output`; refused before any Monte
    Carlo when it cannot be written or would replace what the toolkit did not write."""
    from .. import package as pkg_io

    package = Path(package)
    if output is None or Path(output).resolve() == package.resolve():
        return pkg_io.check_output(package, in_place=True)
    return pkg_io.check_output(output, overwrite=overwrite)


def _is_main() -> bool:
    from .. import distributed

    return distributed.is_main()


def _write_certificate(bench: _Bench, cert: Certificate, dest: Path | None = None, overwrite: bool = False) -> Path:
    from .. import package as pkg_io
    from ..package.card import certificate_summary, model_name
    from ..provenance import now
    from .plots import certificate_png

    config = copy.deepcopy(bench.config)
    config["certificate"] = certificate_summary(cert)
    history = config.setdefault("provenance", {}).setdefault("history", [])
    history.append({"stage": "certify", "time": now(), "device": cert["device"]["name"], "tile": cert["tile"],
                    "engine": cert.get("engine", "aihwkit"),
                    "repeats": cert["repeats"], "seed": cert["seed"],
                    "passed": cert.get("verdict", {}).get("passed")})
    files = {
        pkg_io.CERTIFICATE: (json.dumps(cert, indent=2) + "\n").encode(),
        CERTIFICATE_PNG: certificate_png(cert, model=model_name(bench.config)),
    }
    dest = dest or bench.path
    pkg_io.write(dest, config, files=files, base=bench.path, overwrite=overwrite)
    return dest / pkg_io.CERTIFICATE


def parse_sweep(text: str) -> tuple[str, list[float]]:
    """'n_w=0:0.2:10' -> ('n_w', 10 evenly spaced values from 0 to 0.2); 'dac_bits=4,6,8' -> a list."""
    key, sep, spec = text.partition("=")
    key = ALIASES.get(key.strip(), key.strip())
    if not sep or not spec.strip():
        raise UsageError(f"bad sweep {text!r}", "write PARAM=START:STOP:N (N points) or PARAM=V1,V2,..., e.g. n_w=0:0.2:10")
    if key not in SWEEPABLE:
        raise unknown("sweep parameter", key, SWEEPABLE)
    try:
        if ":" in spec:
            a, b, n = spec.split(":")
            count = int(n)
            if count < 2:
                raise ValueError
            values = [float(a) + (float(b) - float(a)) * i / (count - 1) for i in range(count)]
        else:
            values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"bad sweep range {spec!r}", "write START:STOP:N with N >= 2 points, e.g. n_w=0:0.2:10") from None
    if key in ("dac_bits", "adc_bits", "tile_size"):
        values = sorted({int(round(v)) for v in values})
    return key, [round(v, 12) for v in values]


def sweep_plan(package: str | Path, param: str, values: list[float] | None, config: CertifyConfig | None,
               kwargs: dict[str, Any]) -> tuple[str, list[float], CertifyConfig, list[tuple]]:
    """`sweep`'s arguments checked, and every value's tiles and times, before the slow part starts."""
    kwargs = dict(kwargs)
    if values is None:
        param, values = parse_sweep(param)
    else:
        param = ALIASES.get(param, param)
        if param not in SWEEPABLE:
            raise unknown("sweep parameter", param, SWEEPABLE)
    if config is None:
        device = kwargs.pop("device", "PCM")
        io_keys = set(IOSettings.__dataclass_fields__)
        io_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in io_keys}
        if param in io_kw:
            raise UsageError(f"{param} is swept; do not also set it")
        dev = _device_config(device, kwargs.pop("device_file", None), kwargs.pop("preset", None),
                             kwargs.pop("tile", "auto"), io_kw)
        if "times" in kwargs and isinstance(kwargs["times"], str):
            kwargs["times"] = kwargs["times"].split(",")
        if "mapping" in kwargs:
            kwargs["mapping"] = _mapping_arg(kwargs["mapping"])
        config = CertifyConfig(device=dev, **kwargs)
    if config.engine == "auto":  # one engine for every point, and a swept n_w needs aihwkit's C++ tile
        config = CertifyConfig.from_dict({**config.to_dict(), "engine": "aihwkit"})
        config.engine_reason = "default for sweeps"
    cfg = _resolved(package, config)
    if cfg.repeats == "auto":
        raise UsageError("a sweep runs a fixed number of repeats per value", "pass `repeats=N`")

    def point(value, tile: str | None = None) -> DeviceConfig:
        dev = DeviceConfig.from_dict({**cfg.device.to_dict(), **({"tile": tile} if tile else {})})
        setattr(dev.io, param, value)
        dev.io.__post_init__()
        return dev

    # one tile kind for every point, so the curve compares settings and not simulators: where one point
    # needs the C++ tiles (n_w > 0) and --tile is auto, every point runs on them (n_w = 0 included)
    kinds = {_tile_for(cfg, point(value)) for value in values}
    tile = "cpp" if len(kinds) > 1 else None
    plans = []  # every value's tiles and times, checked before the slow part starts
    for value in values:
        dev = point(value, tile)
        tile_kind = _tile_for(cfg, dev)
        rpu = rpu_config(dev, tile_kind, cfg.mapping)
        plans.append((value, dev, tile_kind, rpu, _time_points(cfg, dev, rpu)))
    return param, values, cfg, plans


def sweep(
    package: str | Path,
    param: str,
    values: list[float] | None = None,
    *,
    config: CertifyConfig | None = None,
    progress: Callable[..., Any] | None = None,
    write: bool = True,
    output: str | Path | None = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """The metric vs one device setting (the seed's inference script: accuracy vs n_w).

    `param` is 'n_w' with `values`, or a whole spec 'n_w=0:0.2:10'. Other keywords as `certify`.
    Writes sweep.csv and sweep.png into the package. One aihwkit conversion per value (the setting
    changes the tiles), Monte Carlo as in `certify` at every time.
    """
    param, values, cfg, plans = sweep_plan(package, param, values, config, kwargs)
    dest = destination(getattr(package, "path", package), output, overwrite) if write and _is_main() else None
    bench = _bench(package, cfg)
    rows: list[dict[str, Any]] = []
    total = sum(cfg.repeats * len(p[-1]) for p in plans)
    bar = progress(total=total, desc=f"sweep {param}", unit="eval") if progress else None
    try:
        for value, dev, tile_kind, rpu, times_ in plans:
            analog, simulated = _simulate(cfg, bench, rpu)
            vals = _spread(analog, bench, times_, cfg.repeats, cfg.seed)
            if bar is not None:
                bar.update(cfg.repeats * len(times_))
            for res in _results(bench, times_, vals):
                rows.append({"param": param, "value": value, "time": res["time"], "seconds": res["seconds"],
                             "mean": res["mean"], "std": res["std"], "ci_low": res["ci95"][0],
                             "ci_high": res["ci95"][1], "min": res["min"], "normalised": res["normalised"],
                             "tile": tile_kind})
    finally:
        if bar is not None:
            bar.close()
    from ..provenance import now, version_of

    device_desc = {**describe(plans[0][1], plans[0][3], plans[0][2]), "swept": param, "engine": cfg.engine}
    result = {"param": param, "values": values, "metric": bench.metric, "device": device_desc,
              "tile": plans[0][2], "normalised_note": _normalised_note(bench),
              "mapping": bench.mapping_record,
              "digital": _digital_block(bench), "data": _data_block(bench),
              "weights_sha256": bench.config["weights"]["sha256"], "seed": cfg.seed, "repeats": cfg.repeats,
              "placement": _placement_block(bench, simulated),
              "aihwkit": version_of("aihwkit"), "rows": rows, "created": now()}
    if write and _is_main():
        from .. import package as pkg_io
        from .plots import sweep_png

        buf = _io.StringIO()
        fields = ["param", "value", "time", "seconds", "mean", "std", "ci_low", "ci_high", "min", "normalised", "tile"]
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        pkg_io.write(dest, bench.config, files={SWEEP_CSV: buf.getvalue().encode(), SWEEP_PNG: sweep_png(result)},
                     base=bench.path, overwrite=overwrite)
        result["files"] = [str(dest / SWEEP_CSV), str(dest / SWEEP_PNG)]
    return result
