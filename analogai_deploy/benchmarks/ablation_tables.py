"""The recipe ablation's report: per model and budget the tables of BENCHMARKS.md, the verdict, the PNG."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .ablation_plan import cell_name, model_label
from .common import describe_machine, update_markdown


def _agg(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def ablation_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, budget, recipe) with finished cells: mean and std over seeds of each seed's
    Monte Carlo mean, its passes, and the widest Monte Carlo 95% CI half-width among its cells."""
    cfg = result["config"]
    rows = []
    for model in cfg["models"]:
        for budget in cfg["budgets"]:
            for recipe in cfg["recipes"]:
                plan_ = [c for c in result["plan"] if (c["model"], c["budget"], c["recipe"]) == (model, budget, recipe)]
                runs = [result["cells"][cell_name(c)] for c in plan_ if cell_name(c) in result["cells"]]
                if not runs:
                    continue
                half = [(v["ci95"][1] - v["ci95"][0]) / 2 for r in runs for v in (*r["n_w"].values(),
                                                                                  *r["drift"].values())]
                rows.append({
                    "model": model, "width": cfg["width"], "budget": budget, "recipe": recipe,
                    "seeds": [r["seed"] for r in runs], "of_seeds": len(plan_), "rounds": runs[0]["rounds"],
                    "passes": runs[0]["passes"], "digital": _agg([r["digital"]["accuracy"] for r in runs]),
                    "n_w": {v: _agg([r["n_w"][v]["mean"] for r in runs]) for v in runs[0]["n_w"]},
                    "drift": {t: _agg([r["drift"][t]["mean"] for r in runs]) for t in cfg["times"]},
                    "ci_half": max(half), "train_cpu_s": statistics.fmean(r["train"]["cpu_s"] for r in runs)})
    return rows


def _cell(ms: tuple[float, float], best: bool, seeds: int) -> str:
    text = f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}" if seeds > 1 else f"{100 * ms[0]:.1f}"  # one seed: no spread
    return f"**{text}**" if best else text


def verdict(rows: list[dict[str, Any]], keys: list[tuple[str, str, str]]) -> str:
    """Who wins each condition and by how much over the runner-up; where msnat does not win, by how much it
    trails ('within one std' when the gap is inside either row's seed spread)."""
    if len(rows) < 2:
        return f"only {rows[0]['recipe']} has finished cells so far."
    wins, losses = [], []
    for group, key, label in keys:
        ranked = sorted(rows, key=lambda r: -r[group][key][0])
        best = ranked[0]
        wins.append(f"{label}: {best['recipe']} (+{100 * (best[group][key][0] - ranked[1][group][key][0]):.1f} "
                    f"pp over {ranked[1]['recipe']})")
        msnat = next((r for r in rows if r["recipe"] == "msnat"), None)
        if msnat is not None and best is not msnat:
            gap = best[group][key][0] - msnat[group][key][0]
            tie = gap <= max(best[group][key][1], msnat[group][key][1])
            losses.append(f"{label} ({best['recipe']} by {100 * gap:.1f} pp{', within one std' if tie else ''})")
    text = "Best: " + "; ".join(wins) + "."
    if any(r["recipe"] == "msnat" for r in rows):
        text += (" MSNAT does not win at " + "; ".join(losses) + "." if losses
                 else " MSNAT has the best mean everywhere.")
    return text


def ablation_markdown(result: dict[str, Any], png_name: str = "bench/ablation.png") -> str:
    """Per model and budget: accuracy vs n_w, PCM drift, who wins; which cells are missing (a partial run)."""
    cfg = result["config"]
    rows = ablation_table(result)
    names = list(dict.fromkeys(cell_name(c) for c in result["plan"]))
    done = [n for n in names if n in result["cells"]]
    out = []
    if len(done) < len(names):
        missing = [n for n in names if n not in result["cells"]]
        listed = ("finished: " + ", ".join(done)) if len(done) <= len(missing) else ("missing: " + ", ".join(missing))
        out.append(f"**Partial: {len(done)} of {len(names)} cells finished** ({listed}).\n")
    for model in cfg["models"]:
        for budget in cfg["budgets"]:
            brows = [r for r in rows if r["model"] == model and r["budget"] == budget]
            if not brows:
                continue
            label = model_label(model, cfg["width"])
            what = (f"{cfg['rounds']} rounds for every recipe" if budget == "seed"
                    else f"{max(r['passes'] for r in brows)} passes for every recipe")
            spread = ("mean ± std over seeds of each seed's" if any(len(r["seeds"]) > 1 for r in brows)
                      else "one seed: its")
            out.append(f"**{label}, {budget} budget ({what}): accuracy % vs n_w at {cfg['sweep_time']}** "
                       f"({spread} {cfg['repeats']}-repeat Monte Carlo mean)\n")
            nws = list(brows[0]["n_w"])
            out.append("| recipe | rounds | passes | seeds | digital | " + " | ".join(f"n_w={v}" for v in nws)
                       + " | MC CI ± |")
            out.append("|---|---|---|---|---|" + "---|" * (len(nws) + 1))
            best = {v: max(r["n_w"][v][0] for r in brows) for v in nws}
            best_d = max(r["digital"][0] for r in brows)
            for r in brows:
                n = len(r["seeds"])
                out.append(f"| {r['recipe']} | {r['rounds']} | {r['passes']} | {n}/{r['of_seeds']} | "
                           f"{_cell(r['digital'], r['digital'][0] == best_d, n)} | "
                           + " | ".join(_cell(r["n_w"][v], r["n_w"][v][0] == best[v], n) for v in nws)
                           + f" | {100 * r['ci_half']:.1f} |")
            out.append("")
            out.append(f"**{label}, {budget} budget: PCM drift (n_w = 0), accuracy %**\n")
            out.append("| recipe | " + " | ".join(cfg["times"]) + " | train CPU time |")
            out.append("|---|" + "---|" * (len(cfg["times"]) + 1))
            best = {t: max(r["drift"][t][0] for r in brows) for t in cfg["times"]}
            for r in brows:
                cells = [_cell(r["drift"][t], r["drift"][t][0] == best[t], len(r["seeds"])) for t in cfg["times"]]
                out.append(f"| {r['recipe']} | " + " | ".join(cells) + f" | {r['train_cpu_s']:.0f} s |")
            out.append("")
            keys = [("n_w", v, f"n_w={v}") for v in nws if v != "0"] + [("drift", t, f"PCM {t}") for t in cfg["times"]]
            out.append(f"*{label}, {budget} budget: {verdict(brows, keys)}*\n")
    out.append(f"![ablation]({png_name})\n")
    return "\n".join(out)


def ablation_png(result: dict[str, Any]) -> bytes:
    """The seed's figure: accuracy vs n_w, one line per recipe (mean ± std over seeds), one panel per
    (model, budget)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    rows = ablation_table(result)
    panels = [(m, b) for m in cfg["models"] for b in cfg["budgets"] if any(
        r["model"] == m and r["budget"] == b for r in rows)] or [(cfg["models"][0], cfg["budgets"][0])]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))  # one colour per recipe in every panel
    colour = {name: f"C{i % 10}" for i, name in enumerate(recipes)}
    for ax, (model, budget) in zip(axes[0], panels):
        for r in (r for r in rows if r["model"] == model and r["budget"] == budget):
            vs = list(r["n_w"])
            ax.errorbar([float(v) for v in vs], [100 * r["n_w"][v][0] for v in vs],
                        yerr=[100 * r["n_w"][v][1] for v in vs], marker="o", capsize=3, label=r["recipe"],
                        color=colour[r["recipe"]])
        ax.set_title(f"{model_label(model, cfg['width'])}, {budget} budget")
        ax.set_xlabel(f"n_w (aihwkit w_noise, PCM at {cfg['sweep_time']})")
        ax.set_ylabel("test accuracy %")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def write_report(result: dict[str, Any], markdown: str | Path | None, png: str | Path, section: str,
                 note: str = "") -> None:
    """The PNG, and (markdown given) the study's section of BENCHMARKS.md: a setup line, `note`, the tables."""
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(ablation_png(result))
    if not markdown:
        return
    cfg = result["config"]
    machines = [r["machine"] for r in result["cells"].values() if r.get("machine")]
    cpu_h = sum(r["train"]["cpu_s"] + r["certify"]["cpu_s"] for r in result["cells"].values()) / 3600
    head = (f"Data {cfg['data']}, model {', '.join(model_label(m, cfg['width']) for m in cfg['models'])}, seeds "
            f"{', '.join(map(str, cfg['seeds']))}, budgets {', '.join(cfg['budgets'])}, {cfg['repeats']} Monte "
            f"Carlo repeats per point, test limit {cfg['limit'] or 'none'}; {cpu_h:.2f} CPU hours in the finished "
            f"cells; measured on: {describe_machine(machines[0]) if machines else 'nothing yet'}.\n")
    update_markdown(markdown, section, head + (f"\n{note}\n" if note else "") + "\n"
                    + ablation_markdown(result, png.as_posix()))
