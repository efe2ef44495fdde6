"""PNG plots of a certificate (metric vs time after programming) and of a sweep (metric vs a setting).

matplotlib's object API on the Agg canvas: no pyplot global state, no display needed.
"""
from __future__ import annotations

import io
from typing import Any


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    return buf.getvalue()


def certificate_png(cert: dict[str, Any], title: str = "", model: str = "") -> bytes:
    return _png(certificate_figure(cert, title, model))


def certificate_figure(cert: dict[str, Any], title: str = "", model: str = ""):
    """Metric vs time: mean, 95% CI band, min, the digital line, and with a gate its threshold line
    and the CI bound it judged (at `at`, on the metric's bad side). `model` names the model in the title."""
    from matplotlib.figure import Figure

    from ..package.card import simulator
    from ..metrics import metric_info

    metric = cert["metric"]
    info = metric_info(metric)
    k, unit = (100.0, "%") if info.percent else (1.0, "")  # fractions shown as percentages, ratios as they are
    res = cert["results"]
    t = [r["seconds"] for r in res]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.fill_between(t, [k * r["ci95"][0] for r in res], [k * r["ci95"][1] for r in res], alpha=0.25, color="C0",
                    label="95% CI")
    ax.plot(t, [k * r["mean"] for r in res], "o-", color="C0",
            label=f"analog ({cert['device']['name']}, {cert['repeats']} repeats)")
    ax.plot(t, [k * r["min"] for r in res], "v", color="C0", alpha=0.5, markersize=4, label="min")
    digital = cert["digital"].get(metric)
    if digital is not None:
        ax.axhline(k * digital, color="k", ls="--", lw=1, label=f"digital {k * digital:.2f}{unit}")
    verdict = cert.get("verdict")
    if verdict and verdict.get("threshold") is not None:
        outcome = "pass" if verdict["passed"] else "FAIL"
        sign, side = ("-", 0) if info.higher_is_better else ("+", 1)
        ax.axhline(k * verdict["threshold"], color="C3", ls="-.", lw=1.5,
                   label=f"gate: {k * verdict['threshold']:.2f}{unit} = digital {sign} {verdict['max_drop_pp']:g} pp "
                         f"({outcome})")
        judged = next((r for r in res if r["time"] == verdict.get("at")), None)
        if judged is not None:  # the number the gate judged: the CI bound on the bad side at its time
            ax.plot([judged["seconds"]], [k * judged["ci95"][side]], "s", color="C3", ms=7, mfc="none",
                    label=f"judged: {'lower' if side == 0 else 'upper'} CI at {verdict['at']}")
    ax.set_xticks(t, [r["time"] for r in res])
    ax.set_xlabel("time after programming")
    ax.set_ylabel(f"{metric} (%)" if unit else metric)
    n = cert.get("data", {}).get("n")
    where = f"{cert['device']['name']} ({simulator(cert)})" + (f", {n} test samples" if n else "")
    ax.set_title(title or (f"{model}: {metric} under drift on {where}" if model else f"{metric} under drift on {where}"),
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def sweep_png(sweep: dict[str, Any]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    rows = sweep["rows"]
    for i, label in enumerate(dict.fromkeys(r["time"] for r in rows)):
        pts = [r for r in rows if r["time"] == label]
        x = [r["value"] for r in pts]
        ax.fill_between(x, [100 * r["ci_low"] for r in pts], [100 * r["ci_high"] for r in pts], alpha=0.2, color=f"C{i}")
        ax.plot(x, [100 * r["mean"] for r in pts], "o-", color=f"C{i}", label=f"t = {label}")
    digital = sweep["digital"].get(sweep["metric"])
    if digital is not None:
        ax.axhline(100 * digital, color="k", ls="--", lw=1, label=f"digital {100 * digital:.2f}%")
    ax.set_xlabel(sweep["param"])
    ax.set_ylabel(f"{sweep['metric']} (%)")
    ax.set_title(f"{sweep['metric']} vs {sweep['param']} on {sweep['device']['name']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
