"""Statistics of a certificate's numbers, and how far they can be trusted, said on the certificate itself.

`stats` gives the mean and the Student-t 95% CI over Monte Carlo repeats; `normalised` the normalised
accuracy (Rasch et al. 2023). Two errors sit on every mean: the Monte Carlo error over repeats (the
certificate's 95% CI, which more repeats shrink) and the test set's sampling error (fixed by the number of
samples: one test image gives 0% or 100% whatever the repeats). Both are checked here; a certificate carries a
warning for each that is wider than WIDE_PP, and the normalised accuracy is omitted, with the reason, where
the digital model is too close to chance for it to mean anything.
"""
from __future__ import annotations

import math
from typing import Any

WIDE_PP = 10.0  # a 95% interval wider than this (percentage points, full width) earns a warning
NORMALISED_MAX_PP = 20.0  # omit normalised accuracy when sampling alone moves it by more than +/- this
Z95 = 1.959963984540054


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile: scipy.stats.t.ppf(p, df) to ~1e-11 relative for df <= 1e4 (tests/test_startup.py),
    without importing scipy.stats (~1 s of start-up). Newton on the tail, a regularised incomplete beta."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    q = 1.0 - p  # the upper tail the quantile leaves
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * q)
    # the tail is convex for t > 0, so Newton from a point left of the root rises to it without overshooting;
    # the normal quantile is one (t's tails are heavier)
    t = _normal_quantile(p)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    for _ in range(100):
        x, y = df / (df + t * t), t * t / (df + t * t)
        density = math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))
        if p < 0.75:  # near the centre P(0 < T < t) keeps t's digits; near the tail P(T > t) does
            step = (p - 0.5 - 0.5 * _betainc(0.5, df / 2, y, x)) / density
        else:
            step = (0.5 * _betainc(df / 2, 0.5, x, y) - q) / density
        t += step
        if abs(step) <= 1e-13 * t:  # the tail itself is good to ~1e-15
            break
    return t


def _normal_quantile(p: float) -> float:
    """Standard normal quantile for p in (0.5, 1): Newton on math.erfc from 0 (left of the root, as above)."""
    x = 0.0
    for _ in range(200):
        step = (0.5 * math.erfc(x / math.sqrt(2)) - (1 - p)) / (math.exp(-x * x / 2) / math.sqrt(2 * math.pi))
        x += step
        if abs(step) <= 1e-15 * max(1.0, x):
            break
    return x


def _betainc(a: float, b: float, x: float, one_minus_x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (x and 1 - x given apart, so neither loses digits), by its
    continued fraction (Numerical Recipes' betacf, modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if one_minus_x <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(one_minus_x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, one_minus_x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        for num in (m * (b - m) * x / ((a - 1 + 2 * m) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1 + 2 * m))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


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
    if margin <= 1e-6:  # a float32 digital accuracy of 1/3 sits ~1e-8 above chance: the same number
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


def stats(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """mean, sample std, Student-t 95% CI of the mean (clipped to the metric's range), min."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = half_width(values) if n > 1 else 0.0
    lo, hi = max(bounds[0], mean - half), min(bounds[1], mean + half)
    return {"mean": mean, "std": std, "ci95": [lo, hi], "min": min(values)}


def half_width(values: list[float]) -> float:
    """The Student-t 95% CI half-width of the mean of `values` (unclipped; inf for fewer than two values)."""
    n = len(values)
    if n < 2:
        return math.inf
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return t_quantile(0.975, n - 1) * std / math.sqrt(n)


def normalised(value: float, digital: float, num_classes: int | None) -> float | None:
    """Rasch et al. (2023): A = 1 - (err - err_FP) / (err_chance - err_FP); None when undefined."""
    if not num_classes or num_classes < 2:
        return None
    err, err_fp, err_chance = 1 - value, 1 - digital, 1 - 1 / num_classes
    if err_chance - err_fp <= 1e-9:  # the digital model is no better than chance
        return None
    return 1 - (err - err_fp) / (err_chance - err_fp)
