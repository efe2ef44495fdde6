"""(e) Start-up: how long a command takes before its work begins, in fresh processes (wall time).

A LeNet certify does ~0.1 s of Monte Carlo; everything else is interpreter start, imports, loading
the package and the data. `startup()` runs each command `n` times in a fresh interpreter (one torch
thread, as the speed table) and subtracts the work the command itself reports (certify: conversion
+ Monte Carlo; recover: training), so "before work" is start-up, imports and loading.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _run(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, Any] | None]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    try:
        return wall, json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    except json.JSONDecodeError:
        return wall, None


def startup(n: int = 3) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="analogai-startup-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2])] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    m = ["-m", "analogai_deploy"]
    _run([*m, "convert", "lenet", "-o", str(root / "lenet"), "--num-classes", "10", "--json"], env)
    commands = {
        "import analogai_deploy": (["-c", "import analogai_deploy"], None),
        "analogai-deploy --help": ([*m, "--help"], None),
        "certify LeNet (1 repeat, 1 time)": ([*m, "certify", str(root / "lenet"), "--repeats", "1", "--times", "1s",
                                             "--json"], lambda d: d["timing"]["convert_s"] + d["timing"]["monte_carlo_s"]),
        "recover LeNet (vanilla, 1 round)": ([*m, "recover", str(root / "lenet"), "--recipe", "vanilla", "-o",
                                             str(root / "rec"), "--json", "training.rounds=1"],
                                            lambda d: d["training"]["seconds"]),
    }
    rows = {}
    for _ in range(n):  # interleaved, like the speed table
        for name, (args, work) in commands.items():
            wall, out = _run(args, env)
            row = rows.setdefault(name, {"wall": [], "work": []})
            row["wall"].append(wall)
            row["work"].append(work(out) if work and out else 0.0)
    return {name: {"wall_s": statistics.median(r["wall"]), "work_s": statistics.median(r["work"]),
                   "before_work_s": statistics.median([w - k for w, k in zip(r["wall"], r["work"])])}
            for name, r in rows.items()}


def startup_markdown(result: dict[str, Any]) -> str:
    rows = ["| (e) start-up, fresh process | wall | its own work | before work starts | target |", "|---|---|---|---|---|"]
    for name, r in result.items():
        target = ("<= 3 s: met" if r["before_work_s"] <= 3.0 else
                  f"<= 3 s: **missed by {r['before_work_s'] - 3:.1f} s**") if "LeNet" in name else ""
        rows.append(f"| {name} | {r['wall_s']:.2f} s | {r['work_s']:.2f} s | {r['before_work_s']:.2f} s | {target} |")
    return "\n".join(rows) + "\n"
