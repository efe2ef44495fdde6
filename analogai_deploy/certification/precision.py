"""How far a certificate's numbers can be trusted, said on the certificate itself.

Two errors sit on every mean: the Monte Carlo error over repeats (the certificate's 95% CI, which
more repeats shrink) and the test set's sampling error (fixed by the number of samples: one test
image gives 0% or 100% whatever the repeats). Both are checked here; a certificate carries a
warning for each that is wider than WIDE_PP, and the normalised accuracy is omitted, with the
reason, where the digital model is too close to chance for it to mean anything.
"""
from __future__ import annotations

import math
from typing import Any

WIDE_PP = 10.0  # a 95% interval wider than this (percentage points, full width) earns a warning
NORMALISED_MAX_PP = 20.0  # omit normalised accuracy when sampling alone moves it by more than +/- this
Z95 = 1.959963984540054


def is_proportion(metric: str) -> bool:
    """Metrics that count hits over samples (a binomial sampling error applies); cosine does not."""
    return metric == "accuracy" or metric.endswith("agreement")


def wilson(p: float, n: int) -> tuple[float, float]:
    """Wilson 95% interval of a proportion p observed on n samples (sensible at p = 0 or 1 and small n)."""
    if n <= 0:
        return 0.0, 1.0
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def normalised_note(digital: float, num_classes: int | None, n: int) -> str | None:
    """Why normalised accuracy is left out (None: it is meaningful).

    A = 1 - (err - err_FP) / (err_chance - err_FP) divides by the digital model's margin over chance,
    so its sampling error is the accuracy's (Agresti-Coull, sensible at 0% and 100%) over that margin.
    """
    if not num_classes or num_classes < 2:
        return None  # no chance level to normalise against (e.g. next-token agreement): nothing to omit
    chance = 1 / num_classes
    margin = digital - chance
    if margin <= 1e-9:
        return (f"normalised accuracy omitted: the digital model ({100 * digital:.2f}%) is no better than "
                f"chance ({100 * chance:.2f}%)")
    p = (digital * n + 2) / (n + 4)
    spread = 100 * Z95 * math.sqrt(p * (1 - p) / (n + 4)) / margin
    if spread > NORMALISED_MAX_PP:
        return (f"normalised accuracy omitted: the digital model ({100 * digital:.2f}%) is only "
                f"{100 * margin:.1f} pp above chance ({100 * chance:.2f}%) on {n} sample{'s' if n != 1 else ''}, so sampling alone "
                f"would move it by +/-{spread:.0f} pp")
    return None


def warnings(metric: str, n: int, repeats: int, results: list[dict[str, Any]]) -> list[str]:
    """One line per problem: the test set too small for its numbers, a Monte Carlo CI too wide."""
    out = []
    if is_proportion(metric) and results:
        worst = max(results, key=lambda r: _width(wilson(r["mean"], n)))
        lo, hi = wilson(worst["mean"], n)
        if 100 * (hi - lo) > WIDE_PP:
            out.append(f"only {n} test sample{'s' if n != 1 else ''}: at {100 * worst['mean']:.2f}% the test set "
                       f"alone leaves {100 * lo:.1f}%-{100 * hi:.1f}% (95%) whatever the repeats; "
                       f"certify on more data (the 95% CI shown is over Monte Carlo repeats only)")
    # a fraction's CI in percentage points; a ratio's (perplexity) relative to its value
    fraction = metric != "perplexity_ratio"
    spread = (lambda r: 100 * _width(r["ci95"])) if fraction else (
        lambda r: 100 * _width(r["ci95"]) / max(abs(r["mean"]), 1e-12))
    wide = [r for r in results if spread(r) > WIDE_PP]
    if wide:
        worst = max(wide, key=spread)
        size = f"{spread(worst):.1f} pp" if fraction else f"{_width(worst['ci95']):.4g} ({spread(worst):.0f}% of the value)"
        out.append(f"the Monte Carlo 95% CI at {worst['time']} is {size} wide "
                   f"with {repeats} repeat{'s' if repeats != 1 else ''}; raise --repeats to narrow it")
    return out


def _width(interval) -> float:
    return interval[1] - interval[0]
