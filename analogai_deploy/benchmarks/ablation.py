"""The recipe ablation figure: train every recipe, certify each on aihwkit PCM, a table and a PNG."""
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

RECIPES = ("vanilla", "single_noise", "msnat_no_fi", "msnat_no_fl", "msnat", "hwa_aihwkit")
TIMES = ("1s", "1h", "1d", "1y")
#: the degrading condition: PCM plus per-MAC weight noise n_w (aihwkit forward.w_noise, C++ tiles).
#: PCM drift alone costs a digits LeNet < 1.5 pp even at 1 y; at n_w = 0.1 vanilla loses ~10 pp.
DEGRADE_N_W = 0.1
#: --gpu: train on cuda with larger batches on 3x32x32 inputs (CIFAR-10 / ResNet-18); aihwkit certifies on the
#: CPU, so it runs on 2,000 test images with 5 repeats to stay inside ~10 minutes. Untested: no GPU here.
GPU_ABLATION = {"device": "cuda", "batch_size": 256, "input_shape": [3, 32, 32], "limit": 2000, "repeats": 5,
                "sweep_repeats": 3}


@dataclass
class AblationConfig(StrictConfig):
    """What the ablation trains and certifies.

    rounds: training rounds for every recipe. One round = one pass over the training set per client
      (MSNAT's K clients each take the whole pass, with 4 forward passes per batch when FL is on), so
      "same budget" means the same number of passes over the data per client, not the same FLOPs.
    repeats: Monte Carlo repeats per time point; sweep_repeats: per n_w value (at sweep_time).
    data: dataset spec; models: built-in or torchvision names; input_shape for non-digits data.
    limit: certify on at most this many test samples (None = the whole test split).
    """

    models: list[str] = field(default_factory=lambda: ["lenet", "mlp"])
    recipes: list[str] = field(default_factory=lambda: list(RECIPES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    rounds: int = 20
    data: str = "digits"
    input_shape: list[int] | None = None
    batch_size: int | None = None
    repeats: int = 10
    times: list[str] = field(default_factory=lambda: list(TIMES))
    n_w: float = DEGRADE_N_W
    sweep: str = "n_w=0:0.2:5"
    sweep_time: str = "1d"
    sweep_repeats: int = 5
    device: str = "auto"
    num_classes: int = 10
    limit: int | None = None

    def __post_init__(self):
        bad = [r for r in self.recipes if r not in RECIPES]
        if bad:
            from ..errors import unknown

            raise unknown("recipe", bad[0], RECIPES)
        if self.rounds < 1 or self.repeats < 2 or self.sweep_repeats < 2 or not self.seeds:
            raise UsageError("rounds must be >= 1, repeats and sweep_repeats >= 2, and at least one seed")


def _cert_summary(cert: dict[str, Any]) -> dict[str, Any]:
    return {"digital": cert["digital"], "tile": cert["tile"],
            "results": {r["time"]: {"mean": r["mean"], "std": r["std"], "ci95": r["ci95"]} for r in cert["results"]}}


def _one(cfg: AblationConfig, model: str, recipe: str, seed: int, root: Path) -> dict[str, Any]:
    """Train one (model, recipe, seed), certify it three ways; cached in root/<name>/bench.json."""
    import analogai_deploy as ad
    from ..certification import sweep

    name = f"{model}-{recipe}-s{seed}"
    cache = root / f"{name}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    base = root / f"{model}-init-s{seed}"
    if not (base / "config.json").is_file():
        kw = {"input_shape": cfg.input_shape} if cfg.input_shape else {}
        ad.convert(model, output=base, num_classes=cfg.num_classes, seed=seed, **kw)
    overrides = [f"training.rounds={cfg.rounds}", f"training.seed={seed}", f"training.device={cfg.device}"]
    if cfg.batch_size:
        overrides.append(f"training.batch_size={cfg.batch_size}")
    start = time.perf_counter()
    pkg = ad.recover(base, recipe, cfg.data, output=root / name, overrides=overrides)
    train_s = time.perf_counter() - start
    common = {"data": cfg.data, "repeats": cfg.repeats, "seed": 1000 * seed, "write": False, "limit": cfg.limit}
    start = time.perf_counter()
    pcm = ad.certify(pkg.path, "PCM", times=cfg.times, **common)
    noisy = ad.certify(pkg.path, "PCM", times=cfg.times, n_w=cfg.n_w, **common)
    sw = sweep(pkg.path, cfg.sweep, times=[cfg.sweep_time], data=cfg.data, repeats=cfg.sweep_repeats,
               seed=1000 * seed, write=False, limit=cfg.limit)
    cert_s = time.perf_counter() - start
    row = {"model": model, "recipe": recipe, "seed": seed, "train_s": train_s, "certify_s": cert_s,
           "training": pkg.config.get("training", {}), "pcm": _cert_summary(pcm), "pcm_nw": _cert_summary(noisy),
           "sweep": {f"{r['value']:g}": {"mean": r["mean"], "std": r["std"]} for r in sw["rows"]}}
    cache.write_text(json.dumps(row, indent=1))
    return row


def ablation(config: AblationConfig | None = None, out_dir: str | Path = "runs/bench/ablation",
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train every recipe on every model and seed, certify each; returns {config, runs: [...]}."""
    import torch

    cfg = config or AblationConfig()
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    runs = []
    jobs = [(m, r, s) for m in cfg.models for s in cfg.seeds for r in cfg.recipes]
    start = time.perf_counter()
    for i, (model, recipe, seed) in enumerate(jobs):
        torch.manual_seed(seed)
        runs.append(_one(cfg, model, recipe, seed, root))
        gc.collect()
        if log:
            r = runs[-1]
            log(f"[{i + 1}/{len(jobs)}] {model} {recipe} seed {seed}: digital "
                f"{100 * r['pcm']['digital']['accuracy']:.1f}%, PCM 1y {100 * r['pcm']['results']['1y']['mean']:.1f}%, "
                f"PCM+n_w 1y {100 * r['pcm_nw']['results']['1y']['mean']:.1f}% "
                f"(train {r['train_s']:.0f}s, certify {r['certify_s']:.0f}s, total {time.perf_counter() - start:.0f}s)")
    result = {"config": cfg.to_dict(), "runs": runs, "machine": machine()}
    (root / "ablation.json").write_text(json.dumps(result, indent=1))
    return result


def _agg(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def ablation_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, recipe): mean and std over seeds of each seed's Monte Carlo mean."""
    cfg = result["config"]
    rows = []
    for model in cfg["models"]:
        for recipe in cfg["recipes"]:
            runs = [r for r in result["runs"] if r["model"] == model and r["recipe"] == recipe]
            if not runs:
                continue
            row: dict[str, Any] = {"model": model, "recipe": recipe, "seeds": len(runs),
                                   "digital": _agg([r["pcm"]["digital"]["accuracy"] for r in runs])}
            for key in ("pcm", "pcm_nw"):
                row[key] = {t: _agg([r[key]["results"][t]["mean"] for r in runs]) for t in cfg["times"]}
            row["sweep"] = {v: _agg([r["sweep"][v]["mean"] for r in runs]) for v in runs[0]["sweep"]}
            row["train_s"] = statistics.fmean(r["train_s"] for r in runs)
            rows.append(row)
    return rows


def _cell(ms: tuple[float, float], best: bool) -> str:
    text = f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"
    return f"**{text}**" if best else text


def ablation_markdown(result: dict[str, Any], png_name: str = "bench/ablation.png") -> str:
    """Three tables per model (PCM, PCM + n_w, n_w sweep) with the best mean in bold, and a verdict line."""
    cfg = result["config"]
    rows = ablation_table(result)
    out = []
    sweep_keys = list(rows[0]["sweep"]) if rows else []
    for model in cfg["models"]:
        mrows = [r for r in rows if r["model"] == model]
        if not mrows:
            continue
        for key, title in (("pcm", "PCM (aihwkit defaults: 7-bit DAC, 9-bit ADC, out_noise 0.06), accuracy %"),
                           ("pcm_nw", f"PCM + n_w = {cfg['n_w']:g} (the degrading condition), accuracy %")):
            out.append(f"**{model}: {title}** (mean ± std over {len(cfg['seeds'])} seeds of each seed's "
                       f"{cfg['repeats']}-repeat Monte Carlo mean)\n")
            train = key == "pcm"  # the first table also says what each recipe's training cost
            out.append("| recipe | digital | " + " | ".join(cfg["times"]) + (" | train time |" if train else " |"))
            out.append("|---|---|" + "---|" * (len(cfg["times"]) + train))
            best = {t: max(r[key][t][0] for r in mrows) for t in cfg["times"]}
            best_d = max(r["digital"][0] for r in mrows)
            for r in mrows:
                cells = [_cell(r[key][t], r[key][t][0] == best[t]) for t in cfg["times"]]
                extra = f" | {r['train_s']:.0f} s |" if train else " |"
                digital = _cell(r["digital"], r["digital"][0] == best_d)
                out.append(f"| {r['recipe']} | {digital} | " + " | ".join(cells) + extra)
            out.append("")
        out.append(f"**{model}: accuracy % vs n_w at {cfg['sweep_time']}** "
                   f"({cfg['sweep_repeats']} repeats per value)\n")
        out.append("| recipe | " + " | ".join(f"n_w={v}" for v in sweep_keys) + " |")
        out.append("|---|" + "---|" * len(sweep_keys))
        best = {v: max(r["sweep"][v][0] for r in mrows) for v in sweep_keys}
        for r in mrows:
            out.append(f"| {r['recipe']} | " + " | ".join(_cell(r["sweep"][v], r["sweep"][v][0] == best[v])
                                                         for v in sweep_keys) + " |")
        out.append("")
        out.append(verdict(mrows, cfg) + "\n")
    out.append(f"![ablation]({png_name})\n")
    return "\n".join(out)


def verdict(mrows: list[dict[str, Any]], cfg: dict[str, Any]) -> str:
    """Where MSNAT wins and where it does not, in words (a win = the best mean; 'within noise' = within 1 std)."""
    msnat = next((r for r in mrows if r["recipe"] == "msnat"), None)
    if msnat is None:
        return ""
    notes = []
    for key, label in (("pcm", "PCM"), ("pcm_nw", f"PCM+n_w={cfg['n_w']:g}")):
        for t in cfg["times"]:
            best = max(mrows, key=lambda r: r[key][t][0])
            if best["recipe"] != "msnat":
                gap = 100 * (best[key][t][0] - msnat[key][t][0])
                tie = gap <= 100 * max(best[key][t][1], msnat[key][t][1])
                notes.append(f"{label} {t}: {best['recipe']} beats msnat by {gap:.2f} pp"
                             + (" (within one std)" if tie else ""))
    if not notes:
        return f"*{mrows[0]['model']}: msnat has the best mean at every time in both conditions.*"
    return f"*{mrows[0]['model']}: msnat does not win everywhere: " + "; ".join(notes) + ".*"


def ablation_png(result: dict[str, Any]) -> bytes:
    """Accuracy vs time (PCM + n_w) and vs n_w, one panel pair per model, mean ± std over seeds."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    rows = ablation_table(result)
    models = [m for m in cfg["models"] if any(r["model"] == m for r in rows)]
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False)
    for i, model in enumerate(models):
        for r in (r for r in rows if r["model"] == model):
            ts = cfg["times"]
            m = [100 * r["pcm_nw"][t][0] for t in ts]
            s = [100 * r["pcm_nw"][t][1] for t in ts]
            axes[i][0].errorbar(range(len(ts)), m, yerr=s, marker="o", capsize=3, label=r["recipe"])
            axes[i][0].set_xticks(range(len(ts)), ts)
            vs = list(r["sweep"])
            axes[i][1].errorbar([float(v) for v in vs], [100 * r["sweep"][v][0] for v in vs],
                                yerr=[100 * r["sweep"][v][1] for v in vs], marker="o", capsize=3, label=r["recipe"])
        axes[i][0].set_title(f"{model}: PCM + n_w={cfg['n_w']:g}")
        axes[i][0].set_ylabel("accuracy %")
        axes[i][1].set_title(f"{model}: PCM at {cfg['sweep_time']} vs n_w")
        axes[i][1].set_xlabel("n_w")
        axes[i][0].grid(alpha=0.3)
        axes[i][1].grid(alpha=0.3)
    axes[0][1].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()



def _write_ablation(result: dict[str, Any], markdown: str | Path, png: str | Path) -> None:
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(ablation_png(result))
    cfg = result["config"]
    head = (f"Data {cfg['data']}, models {', '.join(cfg['models'])}, seeds {', '.join(map(str, cfg['seeds']))}, "
            f"{cfg['rounds']} rounds per recipe, measured on: {describe_machine(result['machine'])}.\n")
    update_markdown(markdown, "ablation", head + "\n" + ablation_markdown(result, png.as_posix()))



def ablation_main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line of bench/ablation.py (and `analogai-deploy bench ablation`)."""
    import argparse

    import torch

    ap = argparse.ArgumentParser(prog="bench/ablation.py", description=ablation_main.__doc__)
    ap.add_argument("--models", default="lenet,mlp")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--data", default="digits")
    ap.add_argument("--out", default="runs/bench/ablation")
    ap.add_argument("--markdown", default="BENCHMARKS.md")
    ap.add_argument("--png", default="bench/ablation.png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gpu", action="store_true", help="train on cuda, batch 256, 3x32x32 inputs (untested here)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    kw: dict[str, Any] = {}
    if args.gpu:
        if not torch.cuda.is_available():
            raise UsageError("--gpu: no CUDA device here", "drop --gpu to run on the CPU")
        kw = GPU_ABLATION
    kw.setdefault("repeats", args.repeats)
    cfg = AblationConfig(models=args.models.split(","), recipes=args.recipes.split(","),
                         seeds=[int(s) for s in args.seeds.split(",")], rounds=args.rounds, data=args.data, **kw)
    result = run_ablation(cfg, args.out, args.markdown, args.png, log=lambda msg: print(msg, flush=True))
    print(ablation_markdown(result, args.png))
    return result


def run_ablation(cfg: AblationConfig, out_dir: str | Path, markdown: str | Path | None, png: str | Path,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the ablation and write the PNG and the markdown section (markdown=None: PNG only)."""
    result = ablation(cfg, out_dir, log=log)
    if markdown:
        _write_ablation(result, markdown, png)
    else:
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        Path(png).write_bytes(ablation_png(result))
    return result


