"""The metric vs one device setting (the seed's inference script: accuracy vs n_w): sweep.csv and sweep.png."""
from __future__ import annotations

import csv
import dataclasses
import io as _io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError, unknown
from ..hardware.devices import DeviceConfig, describe, rpu_config
from . import certificate
from .bench import load, simulate
from .config import ALIASES, CertifyConfig, resolve_config, settings_config, time_points
from .montecarlo import spread
from .simulators import SIMULATORS

SWEEP_CSV, SWEEP_PNG = "sweep.csv", "sweep.png"
SWEEPABLE = ("n_w", "out_noise", "dac_bits", "adc_bits", "tile_size")


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
    """`sweep`'s arguments checked, and every value's tiles and times, before the slow part starts. `kwargs`:
    certify's keyword settings (config.settings_config), none of them beside a `config`."""
    if values is None:
        param, values = parse_sweep(param)
    else:
        param = ALIASES.get(param, param)
        if param not in SWEEPABLE:
            raise unknown("sweep parameter", param, SWEEPABLE)
    if param in kwargs:
        raise UsageError(f"{param} is swept; do not also set it")
    config = settings_config(config, **kwargs)
    if config.engine == "auto":  # one engine for every point, and a swept n_w needs aihwkit's C++ tile
        config = dataclasses.replace(config, engine="aihwkit")
    cfg, _ = resolve_config(package, config)
    if cfg.repeats == "auto":
        raise UsageError("a sweep runs a fixed number of repeats per value", "pass `repeats=N`")
    engine = SIMULATORS[cfg.engine]

    def point(value, tile: str | None = None) -> DeviceConfig:
        dev = DeviceConfig.from_dict({**cfg.device.to_dict(), **({"tile": tile} if tile else {})})
        return dataclasses.replace(dev, io=dataclasses.replace(dev.io, **{param: value}))

    # one tile kind for every point, so the curve compares settings and not simulators: where one point
    # needs the C++ tiles (n_w > 0) and --tile is auto, every point runs on them (n_w = 0 included)
    kinds = {engine.tile(point(value)) for value in values}
    tile = "cpp" if len(kinds) > 1 else None
    plans = []  # every value's tiles and times, checked before the slow part starts
    for value in values:
        dev = point(value, tile)
        tile_kind = engine.tile(dev)
        rpu = rpu_config(dev, tile_kind, cfg.mapping)
        plans.append((value, dev, tile_kind, rpu, time_points(cfg, dev, rpu)))
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
    from .. import distributed

    param, values, cfg, plans = sweep_plan(package, param, values, config, kwargs)
    main = write and distributed.is_main()
    dest = certificate.destination(getattr(package, "path", package), output, overwrite) if main else None
    bench = load(package, cfg)
    rows: list[dict[str, Any]] = []
    total = sum(cfg.repeats * len(p[-1]) for p in plans)
    bar = progress(total=total, desc=f"sweep {param}", unit="eval") if progress else None
    try:
        for value, dev, tile_kind, rpu, times_ in plans:
            sim = simulate(cfg.engine, bench, rpu)
            vals = spread(sim, bench, times_, cfg.repeats, cfg.seed)
            if bar is not None:
                bar.update(cfg.repeats * len(times_))
            for res in certificate.results(bench, times_, vals):
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
              "tile": plans[0][2], "normalised_note": certificate.normalised_note(bench),
              "mapping": bench.mapping_record,
              "digital": certificate.digital_block(bench), "data": certificate.data_block(bench),
              "weights_sha256": bench.config["weights"]["sha256"], "seed": cfg.seed, "repeats": cfg.repeats,
              "placement": certificate.placement_block(bench, sim.simulated),
              "aihwkit": version_of("aihwkit"), "rows": rows, "created": now()}
    if main:
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
