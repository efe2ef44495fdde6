"""What every Monte Carlo run of one package shares, and the package's chip on an engine: the public bench
that certify, sweeps, the benchmarks and the tests all build on.

    run = resolve(PKG, CertifyConfig(repeats=3))
    b = load(PKG, run.config)                          # the digital model, its inputs, reference and mapping
    sim = simulate(run.config.engine, b, run.rpu)      # the mapped model on that engine's tiles
    values = monte_carlo(sim, b, run.times, 3, seed=0)

`simulate` also takes a bare nn.Module (benchmarks and tests): then the default conversion's placement of it,
with no mapping.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analog import outliers
from ..analog.mapping import MappingConfig, package_mapping
from ..data.eval_set import EvalSet, load_eval_set
from ..errors import UsageError
from ..metrics import resolve_metric, run, score
from .config import CertifyConfig
from .simulated import Mapped, map_digital
from .simulators import SIMULATORS, Simulator


@dataclass
class Bench:
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


def digital_model(package: str | Path):
    """The package (its weights' sha256 verified) and its model with every analog layer digital again."""
    from .. import package as pkg_io
    from ..analog.convert import to_digital

    pkg = pkg_io.load(package)
    return pkg, to_digital(pkg.model).eval()


def load(package: str | Path, cfg: CertifyConfig) -> Bench:
    """The bench of `package` under a resolved `cfg` (config.resolve): inputs, metric, digital reference and
    the mapping's digital side (`map_bench`)."""
    from .. import package as pkg_io

    pkg, digital = digital_model(package)
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
    bench = Bench(pkg.path, pkg.config, digital, data, metric, reference, value, seconds, pkg.placement)
    map_bench(bench, cfg)
    return bench


def map_bench(bench: Bench, cfg: CertifyConfig) -> None:
    """The mapping's digital side, shared by both engines and `to_aihwkit` (simulated.map_digital); and what
    the certificate records about it."""
    m = cfg.mapping.complete()
    mapped = bench.mapped = map_digital(bench.path, bench.config, bench.digital, bench.placement, m, cfg.data)
    clipped = mapped.clipped
    record: dict[str, Any] = {**m.to_dict(), "source": "package" if "mapping" in bench.config else "legacy (no "
                              "mapping in config.json)", "overridden": _overridden(bench.config, m)}
    trained_io = {k: v for k, v in m.io.to_dict().items() if v is not None}
    own_io = cfg.device.preset or cfg.device.name == "ideal"  # their own periphery (see config._package_io)
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


def split_cost(mapped: Mapped, bench: Bench) -> dict[str, Any]:
    """The digital-outlier split's cost (outliers.cost), its MACs counted on the first evaluation batch."""
    vectors, per = outliers.macs_per_vector(mapped.model, bench.placement, bench.data.batches[0])
    return outliers.cost(mapped.outliers, bench.placement, vectors, per)


def _overridden(config: dict[str, Any], m: MappingConfig) -> dict[str, Any]:
    """The mapping fields (and trained-for IO) that differ from what the package records."""
    base = package_mapping(config).complete().to_dict()
    mine = m.to_dict()
    return {k: v for k, v in mine.items() if k != "io" and base.get(k) != v}


def simulate(engine: str, bench: Bench | nn.Module, rpu) -> Simulator:
    """The bench's mapped model (or a bare model, on the default conversion's placement) on `engine`'s tiles
    with `rpu` (devices.rpu_config), its digital parts installed."""
    if isinstance(bench, nn.Module):
        from ..analog.placement import plan

        bench = Bench(Path("."), {}, bench, None, "", None, 0.0, 0.0, plan(bench))
    return SIMULATORS[engine].install(bench.mapped or Mapped(bench.digital), bench.placement, rpu)


def chip(package: str | Path, cfg: CertifyConfig, rpu) -> tuple[nn.Module, list[str], Any]:
    """`to_aihwkit`'s model, the placement layers it simulates, and the package it came from."""
    pkg, digital = digital_model(package)
    mapped = map_digital(pkg.path, pkg.config, digital, pkg.placement, cfg.mapping, cfg.data)
    sim = SIMULATORS["aihwkit"].install(mapped, pkg.placement, rpu)
    return sim.model, sim.simulated, pkg
