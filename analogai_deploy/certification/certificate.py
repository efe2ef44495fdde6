"""certificate.json: its results per time, the gate's drop and verdict, its blocks, and writing it.

`judge` is the one place a gate's drop and verdict are computed: certify records it, and the zoo's gate
(zoo/gate.py) recomputes it from the recorded per-repeat values with the same function.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..metrics import metric_info, normalised, parse_time, statistics, stats

if TYPE_CHECKING:
    from .bench import Bench

CERTIFICATE_PNG = "certificate.png"


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
        row = row_at(self["results"], parse_time(time_label)[1])
        if row is None:
            raise KeyError(time_label)
        return row


def row_at(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any] | None:
    """The result row at `seconds` after programming (None where there is none)."""
    return next((r for r in rows if abs(float(r.get("seconds", -1)) - seconds) < 1e-9), None)


def results(bench: Bench, times: list[tuple[str, float]], values: list[list[float]]) -> list[dict[str, Any]]:
    """The certificate's rows: per time its statistics over the repeats, normalised value and the values."""
    classes = bench.data.num_classes or bench.config.get("num_classes")
    given = statistics.is_proportion(bench.metric) and normalised_note(bench) is None
    rows = []
    for (label, seconds), vals in zip(times, values):
        s = stats(vals, metric_info(bench.metric).bounds)
        norm = normalised(s["mean"], bench.digital_value, classes) if given else None
        rows.append({"time": label, "seconds": seconds, **s, "normalised": norm, "values": vals})
    return rows


def judge(metric_name: str, digital: float, ci95: list[float], max_drop: float, at: str,
          name_metric: bool = False) -> dict[str, Any]:
    """A gate of `max_drop` pp at time label `at` on one result's 95% CI: the drop in the metric's bad
    direction, on the CI bound on that side, and whether it passes. `name_metric`: the rule names the metric
    even for accuracy (the zoo's wording)."""
    metric = metric_info(metric_name)
    drop_pp = metric.drop_pp(digital, ci95)
    side = "lower" if metric.higher_is_better else "upper"
    of = f" of {metric_name}" if name_metric or metric_name != "accuracy" else ""
    return {
        "rule": f"max drop {max_drop:g} pp{of} at {at} ({side} 95% CI)",
        "metric": metric_name, "higher_is_better": metric.higher_is_better,
        "max_drop_pp": max_drop, "at": at, "threshold": metric.threshold(digital, max_drop),
        "drop_pp": drop_pp, "passed": bool(drop_pp <= max_drop + 1e-9),
    }


def verdict(max_drop: float | None, at: str, digital: float, rows: list[dict[str, Any]],
            metric_name: str = "accuracy") -> dict[str, Any] | None:
    """The certificate's verdict on its gate (None without one): `judge` on the row at time `at`."""
    if max_drop is None:
        return None
    label, seconds = parse_time(at)
    row = row_at(rows, seconds)
    return judge(metric_name, digital, row["ci95"], max_drop, label)


def placement_block(bench: Bench, simulated: list[str]) -> dict[str, Any]:
    """What the certificate simulated: the record's hash and the layers put on tiles (= its analog list)."""
    block = {"sha256": bench.placement.sha256, "simulated": list(simulated)}
    if bench.placement.derived:
        block["derived"] = True  # the package predates the record; derived from its analog settings at load
    return block


def normalised_note(bench: Bench) -> str | None:
    """Why the normalised accuracy is left out (metrics/statistics.py); None where it is given or does not apply."""
    if not statistics.is_proportion(bench.metric):
        return None
    classes = bench.data.num_classes or bench.config.get("num_classes")
    return statistics.normalised_note(bench.digital_value, classes, bench.data.n)


def digital_block(bench: Bench) -> dict[str, Any]:
    return {bench.metric: bench.digital_value}


def data_block(bench: Bench) -> dict[str, Any]:
    split = "test" if bench.data.labels is not None else "label-free"
    if bench.data.split not in (None, "test", "built-in"):
        split = f"{split}, {bench.data.split}"
    block = {"spec": bench.data.spec, "fingerprint": bench.data.fingerprint, "split": split, "n": bench.data.n}
    if bench.data.label_names and bench.metric in ("accuracy", "agreement") and bench.data.kind in ("image", "logits"):
        block["labels"] = list(bench.data.label_names)  # what each output is: the package's names (labels.py)
    if bench.metric != "accuracy":  # what the label-free metric compares with (bench.load)
        ref = bench.config.get("reference")
        block["reference"] = ({"model": "the weights the package was distilled from", "file": ref["file"],
                               "sha256": ref["sha256"]} if ref else {"model": "the package's own digital model"})
    return block


def destination(package: str | Path, output: str | Path | None, overwrite: bool) -> Path:
    """Where the certified package goes: `package` itself, or a copy at `output`; refused before any Monte
    Carlo when it cannot be written or would replace what the toolkit did not write."""
    from .. import package as pkg_io

    package = Path(package)
    if output is None or Path(output).resolve() == package.resolve():
        return pkg_io.check_output(package, in_place=True)
    return pkg_io.check_output(output, overwrite=overwrite)


def write(bench: Bench, cert: Certificate, dest: Path | None = None, overwrite: bool = False) -> Path:
    """certificate.json and certificate.png into the package at `dest` (default: the bench's own), with the
    certificate's summary and a history entry in its config.json."""
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
