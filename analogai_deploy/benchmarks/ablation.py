"""The recipe ablation: train every recipe at two budgets, certify each on aihwkit PCM, tables and a PNG.

Every finished cell - one trained and certified (model, width, recipe, seed, rounds) - is a small JSON file in
the cache folder, so a stopped study resumes where it stopped, finished cells can be committed, and
`--report-only` rebuilds the tables and the PNG from the cache alone. The study's plan and its budgets:
ablation_plan.py; its tables and PNG: ablation_tables.py.
"""
from __future__ import annotations

import dataclasses
import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .ablation_plan import BUDGETS, GPU_ABLATION, N_W, RECIPES, AblationConfig, cell_name, model_label, plan
from .ablation_tables import ablation_markdown, write_report
from .common import machine


def _cached(cache: Path, cell: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any] | None:
    path = cache / f"{cell_name(cell)}.json"
    if not path.is_file():
        return None
    row = json.loads(path.read_text())
    if row.get("settings") != settings:
        raise UsageError(f"{path} was certified with other settings ({row.get('settings')})",
                         "use another `cache` folder for these settings, or the settings it was made with")
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
    probe = dataclasses.replace(cfg, repeats=2, n_w=[0.0], times=[cfg.sweep_time])
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
