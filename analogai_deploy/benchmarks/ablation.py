"""The recipe ablation: train every recipe at two budgets, certify each on aihwkit PCM, tables and a PNG.

A study is one (model, width) x recipes x seeds x budgets. Every finished cell - one trained and certified
(model, width, recipe, seed, rounds) - is a small JSON file in the cache folder, so a stopped study resumes
where it stopped, finished cells can be committed, and `--report-only` rebuilds the tables and the PNG from
the cache alone. Two budgets:
  seed:  each recipe as configured, the same number of rounds for every recipe;
  equal: every recipe gets the same number of forward+backward passes over the training set (an MSNAT round
         is 5 clients x 4 feedback passes = 20 passes, a vanilla round 1), so cheaper recipes train more rounds.
A cell whose rounds are the same under both budgets (msnat's, whose passes set the equal budget) is trained once.
"""
from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import StrictConfig
from ..errors import UsageError
from .common import describe_machine, machine, update_markdown

RECIPES = ("vanilla", "single_noise", "msnat_no_fi", "msnat_no_fl", "msnat", "hwa_aihwkit", "afm")
BUDGETS = ("seed", "equal")
#: the seed's figure: accuracy vs aihwkit's per-MAC weight noise n_w (forward.w_noise, C++ tiles)
N_W = (0.0, 0.05, 0.10, 0.14, 0.20)
#: --gpu: train on cuda with larger batches; aihwkit certifies on the CPU. Untested: no GPU here.
GPU_ABLATION = {"device": "cuda", "batch_size": 256}


@dataclass
class AblationConfig(StrictConfig):
    """What one study trains and certifies.

    models: built-in or torchvision names; width: resnet18_cifar's base width (None = the model's own).
    recipes: any recipe `recover` takes (a shipped name or a YAML path). rounds: the seed budget's rounds for
      every recipe; the equal budget gives every recipe `equal_passes` passes (None = the most passes any
      listed recipe makes in `rounds` rounds, i.e. msnat's).
    n_w: the weight-noise axis, certified at sweep_time; times: PCM drift points (n_w = 0), the package's
      own mapping. repeats: Monte Carlo repeats per point. limit: certify on at most this many test samples.
    """

    models: list[str] = field(default_factory=lambda: ["lenet", "mlp"])
    width: int | None = None
    recipes: list[str] = field(default_factory=lambda: list(RECIPES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budgets: list[str] = field(default_factory=lambda: list(BUDGETS))
    rounds: int = 20
    equal_passes: int | None = None
    data: str = "digits"
    input_shape: list[int] | None = None
    batch_size: int | None = None
    repeats: int = 10
    n_w: list[float] = field(default_factory=lambda: list(N_W))
    sweep_time: str = "1s"
    times: list[str] = field(default_factory=lambda: ["1s", "1d", "1y"])
    device: str = "auto"
    num_classes: int = 10
    limit: int | None = None

    def __post_init__(self):
        bad = [b for b in self.budgets if b not in BUDGETS]
        if bad:
            from ..errors import unknown

            raise unknown("budget", bad[0], BUDGETS)
        if self.rounds < 1 or self.repeats < 2 or not self.seeds or not self.recipes or not self.n_w:
            raise UsageError("rounds must be >= 1, repeats >= 2, and seeds, recipes and n_w non-empty")
        if self.sweep_time not in self.times:
            raise UsageError(f"sweep_time {self.sweep_time} must be one of the drift times {self.times}")
        if 0.0 not in self.n_w:
            raise UsageError("n_w must include 0 (the drift table's point at sweep_time)")

    def certify_settings(self) -> dict[str, Any]:
        """What a cached cell's numbers depend on besides its training: a cell certified otherwise is refused."""
        return {"data": self.data, "repeats": self.repeats, "n_w": list(self.n_w), "sweep_time": self.sweep_time,
                "times": list(self.times), "limit": self.limit}


def passes_per_round(recipe: str) -> int:
    """Forward+backward passes over the training set one round of `recipe` makes: epochs x FI clients x
    (1 + feedback deltas when FL is on) x 2 with SAM, + the adversarial attack's passes. aihwkit HWA: epochs."""
    from ..recovery.recipe import load

    r = load(recipe)
    t, rec = r.training, r.recovery
    if t.engine == "aihwkit_hwa":
        return t.epochs_per_round
    clients = len(rec.noise) if t.use_FI and len(rec.noise) > 1 else 1
    per_batch = (1 + len(rec.feedback.deltas)) if t.use_FL else 1
    per_batch *= 2 if rec.optimizer.sam else 1
    adv = rec.adversarial
    per_batch += (1 if adv.FGSM.use else 0) + (adv.PGD.steps if adv.PGD.use else 0)
    return t.epochs_per_round * clients * per_batch


def plan(cfg: AblationConfig) -> list[dict[str, Any]]:
    """Every (model, recipe, seed, budget) with its rounds and passes, in run order: seed by seed (the most
    informative first), cheapest first within a seed. Cells of equal rounds share one training run."""
    ppr = {r: passes_per_round(r) for r in cfg.recipes}
    equal = cfg.equal_passes or cfg.rounds * max(ppr.values())
    cells = []
    for model in cfg.models:
        for seed in cfg.seeds:
            tier = []
            for budget in cfg.budgets:
                for recipe in cfg.recipes:
                    rounds = cfg.rounds if budget == "seed" else max(1, equal // ppr[recipe])
                    tier.append({"model": model, "width": cfg.width, "recipe": recipe, "seed": seed,
                                 "budget": budget, "rounds": rounds, "passes": rounds * ppr[recipe],
                                 "passes_per_round": ppr[recipe]})
            tier.sort(key=lambda c: c["passes"] * (8 if c["recipe"] == "hwa_aihwkit" else 1))
            cells += tier
    order = {m: i for i, m in enumerate(cfg.models)}
    seeds = {s: i for i, s in enumerate(cfg.seeds)}
    return sorted(cells, key=lambda c: (seeds[c["seed"]], order[c["model"]]))  # stable: keeps cost order


def model_label(model: str, width: int | None) -> str:
    return f"{model}-w{width}" if width else model


def cell_name(cell: dict[str, Any]) -> str:
    return f"{model_label(cell['model'], cell['width'])}-{Path(cell['recipe']).stem}-s{cell['seed']}-r{cell['rounds']}"


def _cached(cache: Path, cell: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any] | None:
    path = cache / f"{cell_name(cell)}.json"
    if not path.is_file():
        return None
    row = json.loads(path.read_text())
    if row.get("settings") != settings:
        raise UsageError(f"{path} was certified with other settings ({row.get('settings')})",
                         "use another --cache folder for these settings, or the settings it was made with")
    return row


def train_and_certify(cfg: AblationConfig, cell: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Train one cell from the seed's shared initialisation and certify it: the n_w axis at sweep_time and
    the other drift times at n_w = 0, on aihwkit's tiles with the package's own mapping."""
    import torch

    import analogai_deploy as ad
    from ..certification import sweep

    label, seed = model_label(cell["model"], cell["width"]), cell["seed"]
    base = out_dir / f"{label}-init-s{seed}"
    if not (base / "config.json").is_file():
        shape = {"input_shape": cfg.input_shape} if cfg.input_shape else {}
        if cell["width"]:
            from ..sources import builtin

            src = builtin.build(cell["model"], num_classes=cfg.num_classes, width=cell["width"], **shape)
            ad.convert(src, output=base, seed=seed, overwrite=True)
        else:
            ad.convert(cell["model"], output=base, num_classes=cfg.num_classes, seed=seed, overwrite=True, **shape)
    overrides = [f"training.rounds={cell['rounds']}", f"training.seed={seed}", f"training.device={cfg.device}"]
    if cfg.batch_size:
        overrides.append(f"training.batch_size={cfg.batch_size}")
    torch.manual_seed(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    # resume=True: a cell stopped mid-training goes on from its checkpoint (bitwise where an uninterrupted run
    # ends); with no checkpoint it trains from the start
    pkg = ad.recover(base, cell["recipe"], cfg.data, output=out_dir / cell_name(cell), overrides=overrides,
                     overwrite=True, resume=True)
    train = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    wall, cpu = time.perf_counter(), time.process_time()
    common = {"data": cfg.data, "repeats": cfg.repeats, "seed": 1000 * seed, "write": False, "limit": cfg.limit}
    sw = sweep(pkg.path, "n_w", list(cfg.n_w), times=[cfg.sweep_time], **common)
    drift_times = [t for t in cfg.times if t != cfg.sweep_time]
    # aihwkit's tiles for every cell, as the n_w sweep (certify's default engine is the fast one where validated)
    pcm = ad.certify(pkg.path, device="PCM", times=drift_times, engine="aihwkit", **common) if drift_times else None
    cert = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
    n_w = {f"{r['value']:g}": {"mean": r["mean"], "std": r["std"], "ci95": [r["ci_low"], r["ci_high"]]}
           for r in sw["rows"]}
    drift = {cfg.sweep_time: n_w["0"]}
    for r in (pcm or {"results": []})["results"]:
        drift[r["time"]] = {"mean": r["mean"], "std": r["std"], "ci95": r["ci95"]}
    training = pkg.config.get("training", {})
    return {**{k: cell[k] for k in ("model", "width", "recipe", "seed", "rounds", "passes_per_round")},
            "passes": cell["rounds"] * cell["passes_per_round"], "settings": cfg.certify_settings(),
            "digital": sw["digital"], "n_w": n_w, "drift": {t: drift[t] for t in cfg.times},
            "train": train, "certify": cert, "best": training.get("best"), "machine": machine()}


def measure(cfg: AblationConfig, out_dir: Path, cache: Path) -> dict[str, float]:
    """CPU seconds of one vanilla epoch, one aihwkit HWA epoch (if listed) and one certify repeat of one
    condition, at the study's model and width; measured once per cache folder (timing.json)."""
    import analogai_deploy as ad

    path = cache / "timing.json"
    if path.is_file():
        return json.loads(path.read_text())
    probe = AblationConfig(**{**cfg.to_dict(), "repeats": 2, "n_w": [0.0], "times": [cfg.sweep_time]})
    cell = {"model": cfg.models[0], "width": cfg.width, "seed": 0, "rounds": 1, "passes_per_round": 1}
    row = train_and_certify(probe, {**cell, "recipe": "vanilla"}, out_dir / "timing")
    timing = {"epoch_cpu_s": row["train"]["cpu_s"], "certify_cpu_s": row["certify"]["cpu_s"] / 2}
    if "hwa_aihwkit" in cfg.recipes:
        cpu = time.process_time()
        ad.recover(out_dir / "timing" / f"{model_label(cfg.models[0], cfg.width)}-init-s0", "hwa_aihwkit",
                   cfg.data, output=out_dir / "timing" / "hwa", overrides=["training.rounds=1"], overwrite=True)
        timing["hwa_epoch_cpu_s"] = time.process_time() - cpu
    timing["model"] = model_label(cfg.models[0], cfg.width)
    path.write_text(json.dumps(timing, indent=1))
    return timing


def estimate(cfg: AblationConfig, cells: list[dict[str, Any]], timing: dict[str, float]) -> float:
    """CPU seconds of the cells: passes x epoch time (HWA's own epoch time) + conditions x repeats x certify."""
    conditions = len(cfg.n_w) + len(cfg.times) - 1
    total = 0.0
    for c in cells:
        epoch = timing.get("hwa_epoch_cpu_s", timing["epoch_cpu_s"]) if c["recipe"] == "hwa_aihwkit" \
            else timing["epoch_cpu_s"]
        total += c["passes"] * epoch + conditions * cfg.repeats * timing["certify_cpu_s"]
    return total


def ablation(config: AblationConfig | None = None, out_dir: str | Path = "runs/bench/ablation",
             cache: str | Path = "bench/results/ablation/default", log: Callable[[str], None] | None = None
             ) -> dict[str, Any]:
    """Run (or resume) a study; returns {config, plan, cells: {name: row}, trained}. Trains nothing that
    the cache holds."""
    import torch

    cfg = config or AblationConfig()
    out, cache = Path(out_dir), Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    settings = cfg.certify_settings()
    cells = plan(cfg)
    unique: dict[str, dict[str, Any]] = {}
    for c in cells:
        unique.setdefault(cell_name(c), c)
    rows = {n: row for n, c in unique.items() if (row := _cached(cache, c, settings)) is not None}
    todo = [c for n, c in unique.items() if n not in rows]
    say = log or (lambda _msg: None)
    say(f"{len(unique)} cells ({len(cells)} with both budgets), {len(rows)} cached, {len(todo)} to run")
    trained = 0
    if todo:
        timing = measure(cfg, out, cache)
        left = estimate(cfg, todo, timing)
        say(f"measured: one epoch {timing['epoch_cpu_s']:.1f} CPU s, aihwkit HWA epoch "
            f"{timing.get('hwa_epoch_cpu_s', 0):.1f} s, one certify repeat {timing['certify_cpu_s']:.1f} s; "
            f"estimate for the {len(todo)} cells: {left / 3600:.2f} CPU hours")
        start = time.perf_counter()
        for cell in todo:
            row = train_and_certify(cfg, cell, out)
            (cache / f"{cell_name(cell)}.json").write_text(json.dumps(row, indent=1))
            rows[cell_name(cell)] = row
            trained += 1
            left -= estimate(cfg, [cell], timing)
            gc.collect()
            torch.manual_seed(0)
            say(f"[{len(rows)}/{len(unique)}] {cell_name(cell)} ({cell['budget']}, {row['passes']} passes): digital "
                f"{100 * row['digital']['accuracy']:.1f}%, n_w={cfg.n_w[-1]:g} "
                f"{100 * row['n_w'][f'{cfg.n_w[-1]:g}']['mean']:.1f}%, {cfg.times[-1]} "
                f"{100 * row['drift'][cfg.times[-1]]['mean']:.1f}% (train {row['train']['cpu_s']:.0f} CPU s, "
                f"certify {row['certify']['cpu_s']:.0f} CPU s; {(time.perf_counter() - start) / 3600:.2f} h "
                f"wall so far, ~{max(left, 0) / 3600:.2f} CPU h left)")
    return {"config": cfg.to_dict(), "plan": cells, "cells": rows, "trained": trained}


def ablation_report(config: AblationConfig, cache: str | Path) -> dict[str, Any]:
    """The study's result from the cache alone (trains nothing): what `ablation` returns, trained = 0."""
    cache = Path(cache)
    settings = config.certify_settings()
    cells = plan(config)
    rows = {}
    for c in cells:
        if (row := _cached(cache, c, settings)) is not None:
            rows[cell_name(c)] = row
    return {"config": config.to_dict(), "plan": cells, "cells": rows, "trained": 0}


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


def _cell(ms: tuple[float, float], best: bool) -> str:
    text = f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"
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
            out.append(f"**{label}, {budget} budget ({what}): accuracy % vs n_w at {cfg['sweep_time']}** "
                       f"(mean ± std over seeds of each seed's {cfg['repeats']}-repeat Monte Carlo mean)\n")
            nws = list(brows[0]["n_w"])
            out.append("| recipe | rounds | passes | seeds | digital | " + " | ".join(f"n_w={v}" for v in nws)
                       + " | MC CI ± |")
            out.append("|---|---|---|---|---|" + "---|" * (len(nws) + 1))
            best = {v: max(r["n_w"][v][0] for r in brows) for v in nws}
            best_d = max(r["digital"][0] for r in brows)
            for r in brows:
                out.append(f"| {r['recipe']} | {r['rounds']} | {r['passes']} | {len(r['seeds'])}/{r['of_seeds']} | "
                           f"{_cell(r['digital'], r['digital'][0] == best_d)} | "
                           + " | ".join(_cell(r["n_w"][v], r["n_w"][v][0] == best[v]) for v in nws)
                           + f" | {100 * r['ci_half']:.1f} |")
            out.append("")
            out.append(f"**{label}, {budget} budget: PCM drift (n_w = 0), accuracy %**\n")
            out.append("| recipe | " + " | ".join(cfg["times"]) + " | train CPU time |")
            out.append("|---|" + "---|" * (len(cfg["times"]) + 1))
            best = {t: max(r["drift"][t][0] for r in brows) for t in cfg["times"]}
            for r in brows:
                out.append(f"| {r['recipe']} | " + " | ".join(_cell(r["drift"][t], r["drift"][t][0] == best[t])
                                                             for t in cfg["times"]) + f" | {r['train_cpu_s']:.0f} s |")
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


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def ablation_main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train and certify a recipe study (resumable), then write its PNG and BENCHMARKS.md section."""
    import argparse

    import torch

    ap = argparse.ArgumentParser(prog="bench/ablation.py", description=ablation_main.__doc__)
    ap.add_argument("--models", default="lenet,mlp")
    ap.add_argument("--width", type=int, default=None, help="resnet18_cifar's base width (64 = standard)")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="any recipe names or YAML paths")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budgets", default=",".join(BUDGETS), help="seed (same rounds), equal (same passes)")
    ap.add_argument("--rounds", type=int, default=20, help="the seed budget's rounds for every recipe")
    ap.add_argument("--equal-passes", type=int, default=None, help="default: rounds x msnat's passes per round")
    ap.add_argument("--n-w", default=",".join(f"{v:g}" for v in N_W), help="the weight-noise axis")
    ap.add_argument("--sweep-time", default="1s")
    ap.add_argument("--times", default="1s,1d,1y", help="PCM drift points")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--limit", type=int, default=None, help="certify on at most this many test samples")
    ap.add_argument("--data", default="digits")
    ap.add_argument("--out", default="runs/bench/ablation", help="the trained packages (not committed)")
    ap.add_argument("--cache", default="bench/results/ablation/digits-small", help="finished cells (committed)")
    ap.add_argument("--markdown", default="BENCHMARKS.md")
    ap.add_argument("--section", default="ablation", help="the BENCHMARKS.md section (<!-- NAME:start -->)")
    ap.add_argument("--note", default="", help="a line written above the tables (reductions, mapping)")
    ap.add_argument("--png", default="bench/ablation.png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="train nothing: tables and PNG from the cache")
    ap.add_argument("--gpu", action="store_true", help="train on cuda, batch 256 (untested here)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    kw: dict[str, Any] = {}
    if args.gpu:
        if not torch.cuda.is_available():
            raise UsageError("--gpu: no CUDA device here", "drop --gpu to run on the CPU")
        kw = dict(GPU_ABLATION)
    cfg = AblationConfig(models=args.models.split(","), width=args.width, recipes=args.recipes.split(","),
                         seeds=[int(s) for s in args.seeds.split(",")], budgets=args.budgets.split(","),
                         rounds=args.rounds, equal_passes=args.equal_passes, n_w=_floats(args.n_w),
                         sweep_time=args.sweep_time, times=args.times.split(","), repeats=args.repeats,
                         limit=args.limit, data=args.data, **kw)
    log = (lambda msg: print(msg, flush=True))
    result = ablation_report(cfg, args.cache) if args.report_only else ablation(cfg, args.out, args.cache, log=log)
    write_report(result, args.markdown or None, args.png, args.section, args.note)
    print(ablation_markdown(result, args.png))
    return result


def run_ablation(cfg: AblationConfig, out_dir: str | Path, cache: str | Path, markdown: str | Path | None,
                 png: str | Path, section: str = "ablation", log: Callable[[str], None] | None = None
                 ) -> dict[str, Any]:
    """Run (or resume) a study and write its PNG and markdown section (markdown=None: the PNG only)."""
    result = ablation(cfg, out_dir, cache, log=log)
    write_report(result, markdown, png, section)
    return result
