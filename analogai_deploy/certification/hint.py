"""The split hint: a text package that missed its gate, measured again with the digital-outlier split."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..metrics import metric_info
from ..tasks import Record
from . import certificate
from .bench import Bench, map_bench, simulate
from .config import CertifyConfig
from .montecarlo import spread

#: how many Monte Carlo repeats (the certificate's first seeds) the split hint measures
HINT_REPEATS = 3


def split_hint(cfg: CertifyConfig, bench: Bench, rpu, verdict: dict[str, Any],
               results: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A text package that missed its gate on the pure-analog mapping: the gate measured again with the
    digital-outlier split (analog/outliers.py) at the mapping's bound, at the gate's time only, on the same inputs
    and the certificate's first HINT_REPEATS seeds - the numbers `certify --outliers digital --times AT
    --repeats 3` gives. None where the gate passed, the split already ran, or the package is not text."""
    m = cfg.mapping.complete()
    if verdict["passed"] or m.outliers == "digital" or not Record.of(bench.config).text:
        return None
    repeats = HINT_REPEATS if cfg.repeats == "auto" else min(HINT_REPEATS, cfg.repeats)  # a gate has >= 2
    split = CertifyConfig.from_dict({**cfg.to_dict(), "repeats": repeats, "ci_width": None, "times": [cfg.at],
                                     "mapping": {**m.to_dict(), "outliers": "digital"}})
    trial = dataclasses.replace(bench, mapped=None, mapping_record={})
    map_bench(trial, split)
    sim = simulate(split.engine, trial, rpu)
    times = split.time_points()
    row = certificate.results(trial, times, spread(sim, trial, times, split.repeats, split.seed))[0]
    gate = certificate.verdict(split.max_drop, split.at, bench.digital_value, [row], bench.metric)
    share = trial.mapping_record["digital_outliers"]
    plain = certificate.row_at(results, row["seconds"])["values"][:split.repeats]
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
