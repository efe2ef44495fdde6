"""Certify a package on aihwkit: Monte Carlo accuracy of the model on simulated analog chips under drift.

    cert = analogai_deploy.certify("runs/lenet", device="PCM", data="digits", times="1s,1h,1d,1y", repeats=10)
    cert["results"][2]["mean"], cert.passed

The package's clean digital weights go on simulated tiles once, exactly as config.json's placement
record says (only the placement's analog modules, every layer kind convert makes analog; everything else
stays digital); the certificate states the placement's sha256 and the layers it simulated, and a planned
layer that cannot be simulated stops certify (exit 1) naming it. The modules, one concern each:

    config.py       CertifyConfig, the keyword settings that make one, its resolution for a package
    simulators.py   the engines (aihwkit's tiles, the fast engine of fast/) behind one interface, by name
    simulated.py    the package's mapping applied: what both engines start from, and what stays digital
    bench.py        what every run of a package shares (digital model, inputs, reference, mapping), its chip
    montecarlo.py   repeats, seeds and streams, the spread over ranks, repeats=auto
    certificate.py  results, the gate's drop and verdict (shared with the zoo's gate), writing it
    hint.py         a missed text gate measured again with the digital-outlier split
    sweep.py        the metric vs one device setting
    plots.py        the PNG plots of a certificate and of a sweep
certificate.json, certificate.png and the card are written into the package.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .._marks import mark
from ..analog import outliers
from ..analog.mapping import MappingConfig
from ..errors import UsageError
from ..hardware.devices import DEVICES, CustomDevice, DeviceConfig, IOSettings, describe
from ..metrics import METRICS, statistics
from . import certificate as cert_io
from .bench import chip, load
from .certificate import Certificate, destination
from .config import ALIASES, CertifyConfig, parse_settings, resolve, settings_config
from .hint import HINT_REPEATS, hint_line, split_hint
from .montecarlo import STREAMS, adaptive, spread
from .simulators import SIMULATORS
from .sweep import parse_sweep, sweep, sweep_plan

__all__ = ["certify", "sweep", "to_aihwkit", "CertifyConfig", "Certificate", "DeviceConfig", "IOSettings",
           "CustomDevice", "MappingConfig", "DEVICES", "METRICS", "parse_settings", "parse_sweep",
           "resolve", "settings_config", "destination", "sweep_plan", "hint_line", "HINT_REPEATS",
           "ALIASES", "SIMULATORS"]

def certify(
    package: str | Path,
    config: CertifyConfig | None = None,
    *,
    progress: Callable[..., Any] | None = None,
    write: bool = True,
    output: str | Path | None = None,
    overwrite: bool = False,
) -> Certificate:
    """Monte Carlo certificate of `package` on a simulated analog device; written into the package.

    `config` holds every setting (default CertifyConfig(): PCM, 1s,1h,1d,1y, 10 repeats, seed 0, the
    package's mapping); `settings_config(**keywords)` builds one from certify's keyword settings, as the
    library's `analogai_deploy.certify` and the CLI do. Its `engine`: aihwkit (its tiles), fast (its device
    model around the fused forward; see fast/) or auto (default): fast where it is validated for the package
    and device, else aihwkit; the certificate says which ran and why.
    `progress(total=..., desc=...)`: a tqdm-like bar factory.
    This process only (under torchrun the repeats spread over its ranks by themselves);
    `analogai_deploy.certify(..., nproc=N)` (launcher.py) spreads them over N local processes.
    `output`: write a copy of the package with the certificate there (for read-only packages) instead of
    updating `package` in place; an existing package there is replaced only with `overwrite`.
    """
    from .. import distributed

    if output is not None and not write:
        raise UsageError("`output` writes a copy of the package with the certificate, and `write=False` writes "
                         "nothing", "pass one of them")
    run = resolve(package, config or CertifyConfig())
    cfg, main = run.config, write and distributed.is_main()
    dest = destination(run.package, output, overwrite) if main else None
    bench = load(run.package, cfg)
    mark("work")  # start-up ends here (benchmarks/startup.py): conversion and Monte Carlo are the work
    start = time.perf_counter()
    sim = SIMULATORS[cfg.engine].install(bench.mapped, bench.placement, run.rpu)
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    auto = None
    if cfg.repeats == "auto":
        values, auto = adaptive(sim, bench, run.times, cfg, progress)
    else:
        values = spread(sim, bench, run.times, cfg.repeats, cfg.seed, progress)
    repeats = len(values[0])
    mc_s = time.perf_counter() - start
    mark("work_done")
    from .. import package as pkg_io
    from ..provenance import now, version_of, versions

    results = cert_io.results(bench, run.times, values)
    cert = Certificate({
        "metric": bench.metric,
        "device": describe(cfg.device, run.rpu, run.tile),
        "tile": run.tile,
        "engine": cfg.engine,
        "engine_reason": run.engine_reason,  # named, or the default's choice and why
        "aihwkit": version_of("aihwkit"),
        "reproducible": run.tile == "torch",
        "data": cert_io.data_block(bench),
        "weights_sha256": bench.config["weights"]["sha256"],
        # the model these numbers belong to: an edit of config.json's model-defining part is refused later
        "model_sha256": pkg_io.model_sha256(bench.config),
        "model_sections": pkg_io.model_sections(bench.config),
        "files_sha256": pkg_io.measured_files(bench.path),  # the tokenizer these numbers were measured with
        "seed": cfg.seed,
        "repeats": repeats,
        "seeds": [cfg.seed + r for r in range(repeats)],
        "streams": STREAMS,
        "digital": cert_io.digital_block(bench),
        "placement": cert_io.placement_block(bench, sim.simulated),
        "mapping": bench.mapping_record,
        "conversion": sim.conversion(),
        "results": results,
        "settings": cfg.to_dict(),
        "created": now(),
        "versions": versions(),
    })
    if auto is not None:  # how many repeats --repeats auto took, and the CI it reached
        cert["adaptive"] = auto
    note = cert_io.normalised_note(bench)
    if note:
        cert["normalised_note"] = note
    cert["warnings"] = statistics.warnings(bench.metric, bench.data.n, repeats, results)
    if auto is not None and not auto["reached"]:
        cert["warnings"].append(f"--repeats auto stopped at --max-repeats {cfg.max_repeats} before every 95% CI "
                                f"half-width was <= {cfg.ci_width:g} pp (widest "
                                f"{max(auto['half_width_pp'].values()):.2f} pp)")
    split_warning = outliers.coverage_warning(bench.placement) if bench.mapping_record.get("outliers") == "digital" \
        else None
    if split_warning:
        cert["warnings"].append(split_warning)
    verdict = cert_io.verdict(cfg.max_drop, cfg.at, bench.digital_value, results, bench.metric)
    if verdict is not None:
        cert["verdict"] = verdict
        cert.split_hint = split_hint(cfg, bench, run.rpu, verdict, results)
    cert.timing = {"convert_s": convert_s, "monte_carlo_s": mc_s,
                   "per_eval_s": mc_s / (repeats * len(run.times)), "digital_pass_s": bench.digital_seconds}
    if main:  # in a distributed run every rank holds the merged certificate; rank 0 writes it
        cert.path = cert_io.write(bench, cert, dest, overwrite)
    return cert


def to_aihwkit(package: str | Path, config: CertifyConfig | None = None) -> nn.Module:
    """The package on aihwkit tiles exactly as certify's aihwkit engine simulates it.

    The package's placement on tiles built by devices.rpu_config for `device` and the mapping (config.json's,
    under `mapping`'s fields), with its digital parts installed on the returned model: weights clipped, input
    scales folded into the tiles and divided out before each DAC (forward pre-hooks), outlier weights beside
    their tiles (forward hooks), calibrated input ranges on the tiles. `config` as in `certify`; only what
    shapes the chip counts (device, IO, mapping, match_qat, `data`: the dataset an image package calibrates
    on): `CertifyConfig.from_dict(cert["settings"])` rebuilds a certificate's chip. Then, in aihwkit's own
    terms:

        model = ad.to_aihwkit("runs/minilm", device="PCM")
        model.eval(); model.program_analog_weights(); model.drift_analog_weights(86400)
        out = model(**batch)
    """
    # the model is aihwkit's, whatever engine the config was certified with
    run = resolve(package, dataclasses.replace(config or CertifyConfig(), engine="aihwkit"))
    return chip(run.package, run.config, run.rpu)[0]
