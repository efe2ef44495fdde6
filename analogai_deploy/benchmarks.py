"""The benchmarks behind BENCHMARKS.md: the recipe ablation and the speed ratios.

    from analogai_deploy import benchmarks
    results = benchmarks.ablation(out_dir="runs/bench/ablation")   # train + certify every recipe
    benchmarks.ablation_markdown(results)                            # the table BENCHMARKS.md shows
    benchmarks.speed()                                               # ratios measured side by side

`bench/ablation.py`, `bench/speed.py` and `analogai-deploy bench ...` are thin wrappers around these.
Every run is cached as JSON next to its package, so an interrupted ablation resumes where it stopped.
"""
from __future__ import annotations

import gc
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._config import StrictConfig
from .errors import UsageError

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
            from .errors import unknown

            raise unknown("recipe", bad[0], RECIPES)
        if self.rounds < 1 or self.repeats < 2 or self.sweep_repeats < 2 or not self.seeds:
            raise UsageError("rounds must be >= 1, repeats and sweep_repeats >= 2, and at least one seed")


def _cert_summary(cert: dict[str, Any]) -> dict[str, Any]:
    return {"digital": cert["digital"], "tile": cert["tile"],
            "results": {r["time"]: {"mean": r["mean"], "std": r["std"], "ci95": r["ci95"]} for r in cert["results"]}}


def _one(cfg: AblationConfig, model: str, recipe: str, seed: int, root: Path) -> dict[str, Any]:
    """Train one (model, recipe, seed), certify it three ways; cached in root/<name>/bench.json."""
    import analogai_deploy as ad
    from .certification import sweep

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


def machine() -> dict[str, Any]:
    """A description of this machine for the benchmark record."""
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version()}


def replace_section(text: str, name: str, body: str) -> str:
    """Replace the text between <!-- NAME:start --> and <!-- NAME:end --> (append the block if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        return text[:text.index(start)] + block + text[text.index(end) + len(end):]
    return text.rstrip() + "\n\n" + block + "\n"


def update_markdown(path: str | Path, name: str, body: str) -> None:
    p = Path(path)
    text = p.read_text(encoding="utf-8") if p.is_file() else "# Benchmarks\n"
    p.write_text(replace_section(text, name, body), encoding="utf-8")


def median_time(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def isfinite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _write_ablation(result: dict[str, Any], markdown: str | Path, png: str | Path) -> None:
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(ablation_png(result))
    cfg = result["config"]
    head = (f"Data {cfg['data']}, models {', '.join(cfg['models'])}, seeds {', '.join(map(str, cfg['seeds']))}, "
            f"{cfg['rounds']} rounds per recipe, measured on: {describe_machine(result['machine'])}.\n")
    update_markdown(markdown, "ablation", head + "\n" + ablation_markdown(result, png.as_posix()))


def describe_machine(m: dict[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s){gpu}, torch {m['torch']}"


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


# ---- speed ----------------------------------------------------------------------------------------------
@dataclass
class SpeedConfig(StrictConfig):
    """What bench/speed.py measures. CPU default: LeNet, batch 128 of 3x32x32 inputs for the training
    steps (the issue's reference setting), the digits test split for certification.

    n: timed runs per figure (medians, interleaved so machine load hits every side alike).
    gpu: run on cuda with gpu_batch; resnet18 on 3x32x32 for the training steps.
    """

    model: str = "lenet"
    batch: int = 128
    shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    n: int = 15
    sigma: float = 0.2
    hwa_w_noise: float = 0.15
    gpu: bool = False
    gpu_model: str = "resnet18"
    gpu_batch: int = 512
    threads: int = 1


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _training_steps(cfg: SpeedConfig, device) -> dict[str, Callable[[], Any]]:
    """(b) one optimizer step each: plain digital, ours with weight noise, aihwkit HWA (torch and C++ tiles)."""
    import copy

    import torch
    from torch import nn

    import analogai_deploy as ad
    from .analog.convert import set_noise, to_digital

    model_name = cfg.gpu_model if cfg.gpu else cfg.model
    batch = cfg.gpu_batch if cfg.gpu else cfg.batch
    import tempfile

    tmp = tempfile.mkdtemp(prefix="analogai-speed-")
    pkg = ad.convert(model_name, output=f"{tmp}/m", num_classes=10, input_shape=cfg.shape)
    ours = pkg.model.to(device).train()
    set_noise(ours, cfg.sigma)
    digital = to_digital(copy.deepcopy(pkg.model)).to(device).train()
    x = torch.randn(batch, *cfg.shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def stepper(model, opt):
        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            _sync(device)
        return step

    steps = {"digital": stepper(digital, torch.optim.SGD(digital.parameters(), lr=0.01, momentum=0.9)),
             "ours_noise": stepper(ours, torch.optim.SGD(ours.parameters(), lr=0.01, momentum=0.9))}
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.optim import AnalogSGD
    from aihwkit.simulator.configs import InferenceRPUConfig, TorchInferenceRPUConfig, WeightModifierType

    from .aihwkit_probe import tile_support

    kinds = [("aihwkit_hwa_torch", TorchInferenceRPUConfig)]
    if tile_support().get("cpp"):
        kinds.append(("aihwkit_hwa_cpp", InferenceRPUConfig))
    for name, cls in kinds:
        rpu = cls()
        rpu.modifier.type = WeightModifierType.ADD_NORMAL
        rpu.modifier.std_dev = cfg.hwa_w_noise
        rpu.modifier.rel_to_actual_wmax = True
        hwa = convert_to_analog(to_digital(copy.deepcopy(pkg.model)), rpu).to(device).train()
        opt = AnalogSGD(hwa.parameters(), lr=0.01, momentum=0.9)
        opt.regroup_param_groups(hwa)
        steps[name] = stepper(hwa, opt)
    return steps


def _msnat_round(cfg: SpeedConfig, device) -> dict[str, Callable[[], Any]]:
    """(a) one MSNAT round's client training (K clients x one epoch, FL: 4 forward passes, backward through 4)
    vs one plain digital epoch, and vs the compute the method needs: K x an epoch of digital steps with
    4 forward passes and one backward through the 4 graphs, on the same batches."""
    import copy
    import tempfile

    import torch
    from torch import nn

    import analogai_deploy as ad
    from . import data as data_mod
    from .analog.convert import to_digital
    from .recovery.engine import Batches, make_trainer
    from .recovery.recipe import load as load_recipe

    tmp = Path(tempfile.mkdtemp(prefix="analogai-speed-"))
    pkg = ad.convert("lenet", output=tmp / "m", num_classes=10)
    ds = data_mod.load("digits", input_shape=pkg.config["input"]["shape"])
    recipe = load_recipe("msnat", [f"training.device={device.type}"])
    trainer = make_trainer(copy.deepcopy(pkg.model), recipe, ds, tmp / "state", identity={})
    k = len(trainer.clients)
    digital = to_digital(copy.deepcopy(pkg.model)).to(device).train()
    opt = torch.optim.Adam(digital.parameters(), lr=1e-3)
    batches = Batches(ds.train, recipe.training.batch_size, device)
    loss_fn = nn.CrossEntropyLoss()

    def epoch(passes: int):
        def run():
            for x, y in batches.iterate(torch.Generator().manual_seed(0)):
                opt.zero_grad(set_to_none=True)
                loss = sum(loss_fn(digital(x), y) for _ in range(passes))
                loss.backward()
                opt.step()
            _sync(device)
        return run

    four = epoch(4)
    return {"msnat_round_clients": lambda: (trainer._train_clients(None), _sync(device)),
            "digital_epoch": epoch(1),
            "method_need": lambda: [four() for _ in range(k)],
            "_k": k}


def _certify_repeat(model_spec: str, device, input_shape: list[int] | None = None) -> dict[str, Callable[[], Any]]:
    """(c) one Monte Carlo repeat at one time point (program, drift to 1 d, one pass over the digits test
    split, score) on aihwkit's torch tile, its C++ tile and the fast engine, vs one digital pass."""
    import tempfile
    import warnings

    import analogai_deploy as ad
    from .aihwkit_probe import tile_support
    from .certification import CertifyConfig, DeviceConfig, _bench, _simulator, monte_carlo
    from .certification.devices import rpu_config
    from .certification.evaluation import run

    warnings.filterwarnings("ignore", message="Using a non-tuple sequence")
    tmp = tempfile.mkdtemp(prefix="analogai-speed-")
    kw = {"input_shape": input_shape} if input_shape else {}
    ad.convert(model_spec, output=f"{tmp}/m", num_classes=10, **kw)
    cfg = CertifyConfig(repeats=1, times=["1d"])
    bench = _bench(f"{tmp}/m", cfg)
    times = cfg.time_points()
    out: dict[str, Callable[[], Any]] = {"digital_pass": lambda: run(bench.digital, bench.data)}
    tiles = ["torch"] + (["cpp"] if tile_support().get("cpp") else [])
    for tile in tiles:
        c = CertifyConfig(device=DeviceConfig(tile=tile), repeats=1, times=["1d"])
        sim = _simulator(c, bench.digital, rpu_config(c.device, tile))
        out[f"aihwkit_{tile}"] = lambda sim=sim: monte_carlo(sim, bench, times, 1, 0)
    fast_cfg = CertifyConfig(repeats=1, times=["1d"], engine="fast")
    fast = _simulator(fast_cfg, bench.digital, rpu_config(fast_cfg.device, "torch"))
    out["fast"] = lambda: monte_carlo(fast, bench, times, 1, 0)
    # where the fast engine's time goes
    out["fast_program"] = fast.program
    out["fast_drift"] = lambda: fast.drift(86400.0)
    out["fast_forward"] = lambda: run(fast, bench.data)
    return out


def _rss_mb() -> float:
    import os

    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_worker(group: str, name: str, cfg_dict: dict[str, Any], queue) -> None:
    """In a fresh process: build the group, run `name` once, report the peak memory it added."""
    import torch

    cfg = SpeedConfig.from_dict(cfg_dict)
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.gpu else "cpu")
    fns = _groups(cfg, device)[group]()
    if device.type == "cuda":
        fns[name]()  # warm-up, then the allocator's peak above what the setup holds
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fns[name]()
        queue.put((torch.cuda.max_memory_allocated() - base) / 2**20)
        return
    import threading

    base = _rss_mb()
    peak = [base]
    stop = threading.Event()

    def poll():  # the resident set sampled every 0.5 ms while the workload runs
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.0005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    for _ in range(3):
        fns[name]()
    stop.set()
    thread.join()
    queue.put(peak[0] - base)


def _groups(cfg: SpeedConfig, device) -> dict[str, Callable[[], dict]]:
    return {"train_step": lambda: _training_steps(cfg, device),
            "msnat_round": lambda: _msnat_round(cfg, device),
            "certify_lenet": lambda: _certify_repeat("lenet", device),
            "certify_resnet": lambda: _certify_repeat(f"{_bench_models()}:small_resnet", device, [1, 8, 8])}


def _bench_models() -> str:
    return str(Path(__file__).resolve().parents[1] / "bench" / "models.py")


def peak_memory(cfg: SpeedConfig, group: str, name: str) -> float:
    """(d) MB of memory the workload adds at its peak, measured in a fresh process (CPU: RSS, GPU: allocator)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_worker, args=(group, name, cfg.to_dict(), q))
    p.start()
    p.join()
    return q.get() if not q.empty() else float("nan")


def speed(cfg: SpeedConfig | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every figure of the speed table, measured side by side in this one run."""
    import torch

    cfg = cfg or SpeedConfig()
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.gpu else "cpu")
    if cfg.gpu and not torch.cuda.is_available():
        raise UsageError("--gpu: no CUDA device here", "drop --gpu to run on the CPU")
    result: dict[str, Any] = {"config": cfg.to_dict(), "machine": machine(), "groups": {}}
    for group, build in _groups(cfg, device).items():
        if log:
            log(f"{group} ...")
        fns = build()
        k = fns.pop("_k", None)
        n = max(6, cfg.n // 2) if group == "msnat_round" else cfg.n
        for fn in fns.values():  # warm-up
            fn()
        # CPU: this process's CPU time (one thread), which other jobs on a shared machine do not inflate;
        # GPU: wall time after a synchronize
        clock = time.perf_counter if device.type == "cuda" else time.process_time
        samples: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(n):  # interleaved: every side sees the same machine load
            for name, fn in fns.items():
                start = clock()
                fn()
                samples[name].append(clock() - start)
        g = {name: {"median_s": statistics.median(v)} for name, v in samples.items()}
        if k:
            g["_k"] = k
        result["groups"][group] = g
        del fns
        gc.collect()
    if log:
        log("peak memory (one fresh process per workload) ...")
    for group, g in result["groups"].items():
        for name in [n for n in g if not n.startswith("_") and n not in ("fast_program", "fast_drift", "fast_forward")]:
            g[name]["peak_mb"] = peak_memory(cfg, group, name)
    return result


def _ms(s: float) -> str:
    return f"{1e3 * s:.1f} ms" if s < 10 else f"{s:.1f} s"


def _mb(v: float | None) -> str:
    return "-" if v is None or not isfinite(v) else f"{v:.0f} MB"


def speed_markdown(result: dict[str, Any]) -> str:
    g = result["groups"]
    cfg = result["config"]
    rows = ["| figure | ours | reference | ratio | target | peak memory (ours / reference) |",
            "|---|---|---|---|---|---|"]

    def row(label, a, b, target, ga, gb):
        ratio = ga[a]["median_s"] / gb[b]["median_s"]
        rows.append(f"| {label} | {_ms(ga[a]['median_s'])} | {_ms(gb[b]['median_s'])} | {ratio:.2f}x | {target} | "
                    f"{_mb(ga[a].get('peak_mb'))} / {_mb(gb[b].get('peak_mb'))} |")
        return ratio

    m = g["msnat_round"]
    k = m.get("_k", 5)
    row(f"(a) MSNAT round (K={k} clients, FL) vs K x 4-pass digital epochs (the method's need)",
        "msnat_round_clients", "method_need", "<= 1.1x", m, m)
    row("(a) MSNAT round vs one plain digital epoch (same samples)", "msnat_round_clients", "digital_epoch",
        f"~{4 * k}x by design", m, m)
    t = g["train_step"]
    row(f"(b) our noise-injected step vs plain digital step ({cfg['model']}, batch {cfg['batch']}, "
        f"{'x'.join(map(str, cfg['shape']))})", "ours_noise", "digital", "<= 1.1x", t, t)
    for name, label in (("aihwkit_hwa_torch", "PyTorch tile"), ("aihwkit_hwa_cpp", "C++ tile")):
        if name in t:
            row(f"(b) aihwkit HWA step ({label}, ADD_NORMAL) vs plain digital step", name, "digital",
                "9.9x / 12x measured by the issue", t, t)
            row(f"(b) our noise-injected step vs aihwkit HWA step ({label})", "ours_noise", name, "< 1x", t, t)
    for group, label in (("certify_lenet", "LeNet"), ("certify_resnet", "ResNet-8")):
        c = g[group]
        row(f"(c) {label}: fast engine, one repeat at 1 d vs one digital pass (digits test split)", "fast",
            "digital_pass", "<= 3x", c, c)
        for tile, tl in (("aihwkit_torch", "PyTorch tile"), ("aihwkit_cpp", "C++ tile")):
            if tile in c:
                row(f"(c) {label}: aihwkit {tl}, one repeat at 1 d vs one digital pass", tile, "digital_pass",
                    "8x / 15x measured by the issue", c, c)
        prog, drift, fwd = (c[k]["median_s"] for k in ("fast_program", "fast_drift", "fast_forward"))
        per = prog / 4 + drift + fwd  # a 1s,1h,1d,1y certificate programs once per repeat, drifts per time
        rows.append(f"| (c) {label}: fast engine per repeat x time point of a 4-time certificate (program / 4 + "
                    f"drift + forward) vs one digital pass | {_ms(per)} | {_ms(c['digital_pass']['median_s'])} | "
                    f"{per / c['digital_pass']['median_s']:.2f}x | <= 3x | |")
        rows.append(f"| (c) {label}: where the fast repeat goes | program {_ms(prog)}, drift {_ms(drift)}, "
                    f"forward {_ms(fwd)} | | | | |")
    clock = "wall time" if cfg["gpu"] else "CPU time of the one benchmark thread (time.process_time)"
    return (f"Measured on: {describe_machine(result['machine'])}; {clock}, medians of {cfg['n']} interleaved runs "
            f"(MSNAT rounds: {max(6, cfg['n'] // 2)}).\n\n" + "\n".join(rows) + "\n")


# ---- fast engine vs aihwkit ------------------------------------------------------------------------------
AGREEMENT_CONDITIONS = {"PCM (7-bit DAC, 9-bit ADC)": {}, "PCM, 5-bit ADC": {"adc_bits": 5}}


def agreement(out_dir: str | Path = "runs/bench/agreement", repeats: int = 20, data: str = "digits",
              models: dict[str, tuple[str, list[int] | None, int]] | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Certify the same trained packages with both engines; is the fast mean inside aihwkit's 95% CI?

    models: label -> (source spec, input_shape, vanilla training rounds). The two engines use
    different seeds, so they draw independent Monte Carlo samples.
    """
    import analogai_deploy as ad

    models = models or {"LeNet": ("lenet", None, 10), "ResNet-8": (f"{_bench_models()}:small_resnet", [1, 8, 8], 8)}
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, (spec, shape, rounds) in models.items():
        pkg = root / f"{label}-vanilla"
        if not (pkg / "config.json").is_file():
            kw = {"input_shape": shape} if shape else {}
            ad.convert(spec, output=root / f"{label}-init", num_classes=10, **kw)
            ad.recover(root / f"{label}-init", "vanilla", data, output=pkg, overrides=[f"training.rounds={rounds}"])
        for cond, io in AGREEMENT_CONDITIONS.items():
            certs = {}
            for engine, seed in (("aihwkit", 0), ("fast", 100_000)):
                certs[engine] = ad.certify(pkg, data=data, repeats=repeats, seed=seed, engine=engine, write=False, **io)
            if log:
                log(f"{label} / {cond}: aihwkit {1e3 * certs['aihwkit'].timing['per_eval_s']:.0f} ms per eval, "
                    f"fast {1e3 * certs['fast'].timing['per_eval_s']:.0f} ms")
            for ra, rf in zip(certs["aihwkit"]["results"], certs["fast"]["results"]):
                rows.append({"model": label, "condition": cond, "time": ra["time"],
                             "digital": certs["aihwkit"]["digital"]["accuracy"],
                             "aihwkit": {k: ra[k] for k in ("mean", "std", "ci95")},
                             "fast": {k: rf[k] for k in ("mean", "std", "ci95")},
                             "inside": ra["ci95"][0] <= rf["mean"] <= ra["ci95"][1],
                             "aihwkit_eval_s": certs["aihwkit"].timing["per_eval_s"],
                             "fast_eval_s": certs["fast"].timing["per_eval_s"]})
    result = {"repeats": repeats, "data": data, "rows": rows, "machine": machine()}
    (root / "agreement.json").write_text(json.dumps(result, indent=1))
    return result


def agreement_markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    out = [f"{result['repeats']} repeats per engine and time point, {result['data']} test split; aihwkit engine = "
           "aihwkit's PyTorch tiles (seeds 0..), fast engine = independent seeds (100000..).\n",
           "| model | condition | time | aihwkit mean [95% CI] | fast mean [95% CI] | fast mean inside aihwkit CI |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        a, f = r["aihwkit"], r["fast"]
        out.append(f"| {r['model']} | {r['condition']} | {r['time']} | {100 * a['mean']:.2f} "
                   f"[{100 * a['ci95'][0]:.2f}, {100 * a['ci95'][1]:.2f}] | {100 * f['mean']:.2f} "
                   f"[{100 * f['ci95'][0]:.2f}, {100 * f['ci95'][1]:.2f}] | {'yes' if r['inside'] else '**no**'} |")
    inside = sum(r["inside"] for r in rows)
    per = {}
    for r in rows:
        per.setdefault((r["model"], r["condition"]), (r["aihwkit_eval_s"], r["fast_eval_s"]))
    speed = "; ".join(f"{m} / {c}: {1e3 * a:.0f} ms vs {1e3 * f:.0f} ms" for (m, c), (a, f) in per.items())
    out.append(f"\n{inside} of {len(rows)} fast means lie inside aihwkit's 95% CI. Time per repeat and time point "
               f"(aihwkit vs fast, this run, machine shared): {speed}.\n")
    return "\n".join(out)


def speed_main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line of bench/speed.py (and `analogai-deploy bench speed`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="bench/speed.py", description=speed_main.__doc__)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gpu", action="store_true", help="cuda, resnet18 on 3x32x32, batch 512 (untested here)")
    ap.add_argument("--markdown", default="BENCHMARKS.md")
    ap.add_argument("--json", default="runs/bench/speed.json")
    ap.add_argument("--agreement-repeats", type=int, default=20, help="0 skips the fast-vs-aihwkit agreement table")
    args = ap.parse_args(argv)
    cfg = SpeedConfig(n=args.n, threads=args.threads, gpu=args.gpu)
    result = run_speed(cfg, args.markdown, args.json, args.agreement_repeats, log=lambda msg: print(msg, flush=True))
    print(speed_markdown(result))
    if "agreement" in result:
        print(agreement_markdown(result["agreement"]))
    return result


def run_speed(cfg: SpeedConfig, markdown: str | Path | None, json_path: str | Path | None,
              agreement_repeats: int = 20, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The speed table, then (CPU) the engine agreement table; writes both sections and the JSON."""
    result = speed(cfg, log=log)
    if markdown:
        update_markdown(markdown, "speed", speed_markdown(result))
    if agreement_repeats and not cfg.gpu:
        if log:
            log("agreement: fast engine vs aihwkit ...")
        result["agreement"] = agreement(repeats=agreement_repeats, log=log)
        if markdown:
            update_markdown(markdown, "agreement", agreement_markdown(result["agreement"]))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1))
    return result
