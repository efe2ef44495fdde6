"""The speed table: MSNAT round vs its need, training steps, certify repeats vs a digital pass, peak memory.

Measured side by side in one run (speed); the workloads: speed_workloads.py, the table: speed_tables.py.
"""
from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .agreement import agreement, agreement_markdown
from .common import machine, update_markdown
from .speed_config import SpeedConfig
from .speed_tables import speed_markdown
from .speed_workloads import workload_groups


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
    fns = workload_groups(cfg, device)[group]()
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


def peak_memory(cfg: SpeedConfig, group: str, name: str) -> float:
    """(d) MB of memory the workload adds at its peak, measured in a fresh process (CPU: RSS, GPU: allocator)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_worker, args=(group, name, cfg.to_dict(), q))
    p.start()
    p.join()
    return q.get() if not q.empty() else float("nan")


def _meta(fns: dict[str, Any]) -> dict[str, Any]:
    return {k: fns.pop(k) for k in [k for k in fns if k.startswith("_")]}


def speed(cfg: SpeedConfig | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every figure of the speed table, measured side by side in this one run."""
    import resource

    import torch

    cfg = cfg or SpeedConfig()
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.gpu else "cpu")
    if cfg.gpu and not torch.cuda.is_available():
        raise UsageError("`gpu=True`: no CUDA device here", "drop `gpu` to run on the CPU")
    result: dict[str, Any] = {"config": cfg.to_dict(), "machine": machine(), "groups": {}}
    for group, build in workload_groups(cfg, device).items():
        if log:
            log(f"{group} ...")
        fns = build()
        meta = _meta(fns)
        n = max(6, cfg.n // 2) if group.startswith("msnat_round") else cfg.n
        for warm_up in fns.values():
            warm_up()
        # CPU: this process's CPU time (one thread), which other jobs on a shared machine do not inflate;
        # GPU: wall time after a synchronize. System time separately (allocation / thread churn).
        clock = time.perf_counter if device.type == "cuda" else time.process_time
        samples: dict[str, list[float]] = {name: [] for name in fns}
        system: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(n):  # interleaved: every side sees the same machine load
            for name, fn in fns.items():
                sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
                start = clock()
                fn()
                samples[name].append(clock() - start)
                system[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0)
        g: dict[str, Any] = {name: {"median_s": statistics.median(v), "sys_s": statistics.median(system[name])}
                             for name, v in samples.items()}
        g.update(meta)
        result["groups"][group] = g
        fns = warm_up = fn = None  # the loop names too: each holds a workload, and with it the group's models
        gc.collect()
    if cfg.peak_memory:
        if log:
            log("peak memory (one fresh process per workload) ...")
        for group, g in result["groups"].items():
            for name in [n for n in g if not n.startswith(("_", "fast_program", "fast_drift", "fast_forward"))]:
                g[name]["peak_mb"] = peak_memory(cfg, group, name)
    if cfg.startup and not cfg.gpu:
        if log:
            log("start-up (fresh processes) ...")
        from .startup import startup

        result["startup"] = startup(n=max(3, cfg.n // 5))
    return result


def speed_main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line of bench/speed.py (and `analogai-deploy bench speed`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="bench/speed.py", description=speed_main.__doc__)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gpu", action="store_true", help="cuda, batch 512 (bench/gpu.sh)")
    ap.add_argument("--markdown", default="BENCHMARKS.md")
    ap.add_argument("--json", default="runs/bench/speed.json")
    ap.add_argument("--agreement-repeats", type=int, default=20, help="0 skips the fast-vs-aihwkit agreement table")
    ap.add_argument("--step-models", default=",".join(SpeedConfig().step_models))
    ap.add_argument("--msnat-models", default=",".join(SpeedConfig().msnat_models))
    ap.add_argument("--certify-models", default=",".join(SpeedConfig().certify_models))
    ap.add_argument("--hwa-models", default=",".join(SpeedConfig().hwa_models))
    ap.add_argument("--text-models", default=",".join(SpeedConfig().text_models))
    ap.add_argument("--text-batch", type=int, default=SpeedConfig().text_batch)
    ap.add_argument("--no-text-torch-path", action="store_true",
                    help="time (f)'s steps on the fused tile only, not also on the torch path it replaced")
    ap.add_argument("--msnat-samples", type=int, default=SpeedConfig().msnat_samples)
    ap.add_argument("--batch", type=int, default=None, help="training-step batch (default 128; --gpu 512)")
    ap.add_argument("--certify-limit", type=int, default=None, help="certify on at most this many test inputs")
    ap.add_argument("--no-peak-memory", action="store_true")
    ap.add_argument("--no-startup", action="store_true")
    args = ap.parse_args(argv)

    def names(s: str) -> list[str]:
        return [m for m in s.split(",") if m]

    kw: dict[str, Any] = {}
    if args.batch:
        kw["gpu_batch" if args.gpu else "batch"] = args.batch
    cfg = SpeedConfig(n=args.n, threads=args.threads, gpu=args.gpu, step_models=names(args.step_models),
                      msnat_models=names(args.msnat_models), certify_models=names(args.certify_models),
                      hwa_models=names(args.hwa_models), text_models=names(args.text_models),
                      text_batch=args.text_batch, text_torch_path=not args.no_text_torch_path,
                      msnat_samples=args.msnat_samples,
                      certify_limit=args.certify_limit, peak_memory=not args.no_peak_memory,
                      startup=not args.no_startup, **kw)
    result = run_speed(cfg, args.markdown or None, args.json or None, args.agreement_repeats,
                       log=lambda msg: print(msg, flush=True))
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
        if "startup" in result:  # its own section (bench/startup.py writes it too)
            from .startup import startup_markdown

            update_markdown(markdown, "startup", startup_markdown(result["startup"]))
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
