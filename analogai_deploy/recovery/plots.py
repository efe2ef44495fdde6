"""The training curve of a recover run (training_curve.png), drawn from its log (train_log.jsonl).

matplotlib's object API on the Agg canvas, imported inside the function: `import analogai_deploy`
and `--help` stay fast, and nothing draws until a run has finished.
"""
from __future__ import annotations

from typing import Any

CURVE_PNG = "training_curve.png"


def training_curve_png(log: list[dict[str, Any]], title: str = "") -> bytes:
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = training_curve_figure(log, title)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def training_curve_figure(log: list[dict[str, Any]], title: str = ""):
    """Accuracy (left) and loss (right) per round: the clients' training mean, validation under noise,
    clean validation; the best round (model selection on validation) marked."""
    from matplotlib.figure import Figure

    rounds = [e["round"] for e in log]
    clients = [e.get("clients") or [] for e in log]
    train_acc = [100 * sum(c["acc"] for c in cs) / len(cs) if cs else float("nan") for cs in clients]
    train_loss = [sum(c["loss"] for c in cs) / len(cs) if cs else float("nan") for cs in clients]
    val = [e.get("val") or {} for e in log]
    sigma = next((v["sigma"] for v in val if "sigma" in v), None)
    fig = Figure(figsize=(9, 3.6))
    acc_ax, loss_ax = fig.subplots(1, 2)
    acc_ax.plot(rounds, train_acc, "o-", ms=3, color="C0", label="train (mean over clients, under noise)")
    acc_ax.plot(rounds, [100 * v.get("acc", float("nan")) for v in val], "o-", ms=3, color="C1",
                label=f"validation at sigma={sigma:g}" if sigma is not None else "validation")
    acc_ax.plot(rounds, [100 * v.get("clean_acc", float("nan")) for v in val], "o--", ms=3, color="C2",
                label="validation, no noise")
    if val and any("acc" in v for v in val):
        best = max(range(len(val)), key=lambda i: val[i].get("acc", float("-inf")))  # first of equal rounds
        acc_ax.axvline(rounds[best], color="k", ls=":", lw=1, label=f"best round {rounds[best]}")
    loss_ax.plot(rounds, train_loss, "o-", ms=3, color="C0", label="train (the recipe's objective)")
    loss_ax.plot(rounds, [v.get("loss", float("nan")) for v in val], "o-", ms=3, color="C1", label="validation")
    acc_ax.set_ylabel("accuracy (%)")
    loss_ax.set_ylabel("loss")
    for ax in (acc_ax, loss_ax):
        ax.set_xlabel("round")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        if len(rounds) <= 20:
            ax.set_xticks(rounds)
    fig.suptitle(title or "training curve", fontsize=10)
    return fig
