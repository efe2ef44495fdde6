"""The speed table: MSNAT round vs its need, training steps, certify repeats vs a digital pass, peak memory."""
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
from .agreement import agreement, agreement_markdown
from .common import bench_models, describe_machine, isfinite, machine, update_markdown

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
    from ..analog.convert import set_noise, to_digital

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

    from ..aihwkit_probe import tile_support

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
    from .. import data as data_mod
    from ..analog.convert import to_digital
    from ..recovery.engine import Batches, make_trainer
    from ..recovery.recipe import load as load_recipe

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
    from ..aihwkit_probe import tile_support
    from ..certification import CertifyConfig, DeviceConfig, _bench, _simulator, monte_carlo
    from ..certification.devices import rpu_config
    from ..certification.evaluation import run

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
            "certify_resnet": lambda: _certify_repeat(f"{bench_models()}:small_resnet", device, [1, 8, 8])}



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
