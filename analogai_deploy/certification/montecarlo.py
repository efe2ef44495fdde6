"""certify's Monte Carlo: repeats, their seeds and streams, the spread over ranks, `repeats=auto`.

Each repeat r seeds torch with seed + r and programs the tiles afresh (new programming noise), then drifts
them to every time in turn (always from the programmed state). Before each drift torch is reseeded with
`stream_seed(seed, r, t)`, so the value at (r, t) depends only on (seed, r, t): not on which other times were
requested, nor on how repeats are split across processes and merged.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..metrics import half_width, run, score
from .config import AUTO_START, CertifyConfig
from .simulators import Simulator

if TYPE_CHECKING:
    from .bench import Bench

#: a torch deprecation aihwkit's HermesNoiseModel triggers on every drift; not the user's concern
_AIHWKIT_NOISE = "Using a non-tuple sequence for multidimensional indexing"
STREAMS = "programming: torch.manual_seed(seed + r); time t: torch.manual_seed(stream_seed(seed, r, t))"


def stream_seed(seed: int, repeat: int, seconds: float) -> int:
    """The seed of the draws at (repeat, time) after programming (read noise, drift, output noise):
    a hash of the three, so adding or dropping a time point leaves every other value as it was."""
    digest = hashlib.sha256(f"{int(seed)}:{int(repeat)}:{float(seconds)!r}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch.manual_seed takes < 2**63


def monte_carlo(sim: Simulator, bench: Bench, times: list[tuple[str, float]], repeats: int, seed: int,
                progress: Callable[..., Any] | None = None, first_repeat: int = 0) -> list[list[float]]:
    """values[time][repeat] for repeats first_repeat .. first_repeat + repeats - 1 (programmed with seed + r,
    each time point then drawn from its own stream, `stream_seed`)."""
    values = [[0.0] * repeats for _ in times]
    bar = progress(total=repeats * len(times), desc=sim.progress_label, unit="eval") if progress else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_AIHWKIT_NOISE, category=UserWarning)
        try:
            for i in range(repeats):
                r = first_repeat + i
                torch.manual_seed(seed + r)
                sim.program()
                for j, (_, seconds) in enumerate(times):
                    torch.manual_seed(stream_seed(seed, r, seconds))
                    sim.drift(seconds)
                    values[j][i] = score(bench.metric, run(sim.model, bench.data), bench.data, bench.reference)
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    return values


def spread(sim: Simulator, bench: Bench, times: list[tuple[str, float]], repeats: int, seed: int,
           progress: Callable[..., Any] | None = None, start: int = 0) -> list[list[float]]:
    """`monte_carlo` of repeats start .. start + repeats - 1 over every rank of a distributed run: each its
    block of repeats, merged in repeat order."""
    from .. import distributed

    if distributed.world() == 1:
        return monte_carlo(sim, bench, times, repeats, seed, progress, first_repeat=start)
    mine = distributed.share(repeats)
    values: list[list[float]] = []
    with distributed.guard():  # a rank that fails here stops every rank with its message
        values = monte_carlo(sim, bench, times, len(mine), seed, progress if distributed.is_main() else None,
                             first_repeat=start + mine.start)
    parts = distributed.all_gather(values)
    return [[v for part in parts for v in part[j]] for j in range(len(times))]


def adaptive(sim: Simulator, bench: Bench, times: list[tuple[str, float]], cfg: CertifyConfig,
             progress: Callable[..., Any] | None = None) -> tuple[list[list[float]], dict[str, Any]]:
    """--repeats auto: AUTO_START repeats, then more until every time's 95% CI half-width is <= ci_width pp
    (or max_repeats). Each step asks for what the current spread says is still missing (t * sd / W)^2, at
    least 2 and at most as many as there are; repeat r is seeded seed + r as always, so the values equal a
    fixed-repeat run with the final count."""
    target = cfg.ci_width / 100.0
    values = spread(sim, bench, times, AUTO_START, cfg.seed, progress)
    while True:
        n = len(values[0])
        widths = [half_width(v) for v in values]
        if max(widths) <= target or n >= cfg.max_repeats:
            break
        # half_width is t * sd / sqrt(n): (t * sd / W)^2 repeats bring it to W
        need = max(math.ceil(n * (w / target) ** 2) for w in widths)
        more = min(cfg.max_repeats - n, max(2, min(need - n, n)))
        extra = spread(sim, bench, times, more, cfg.seed, progress, start=n)
        values = [a + b for a, b in zip(values, extra)]
    record = {"ci_width_pp": cfg.ci_width, "max_repeats": cfg.max_repeats, "repeats": len(values[0]),
              "reached": max(widths) <= target,
              "half_width_pp": {label: round(100 * w, 4) for (label, _), w in zip(times, widths)}}
    return values, record
