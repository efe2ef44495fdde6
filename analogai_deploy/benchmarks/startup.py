"""(e) Start-up: how long a command takes before its work begins, in fresh processes, and which imports
that time goes to.

A LeNet certify does ~0.1 s of Monte Carlo; everything else is interpreter start, imports, loading
the package and the data. `startup()` runs each command `n` times in a fresh interpreter (one torch
thread, as the speed table) and subtracts the work the command itself reports (certify: conversion
+ Monte Carlo; recover: training), so "before work" is start-up, imports and loading. Wall time is
what a user waits on an idle machine; on a shared one it grows with the load, so the child's whole
CPU time (user + system, work included: the work is reported in wall seconds only) is reported beside
it, an upper bound of an idle machine's single-threaded start. `imports()` runs each command once more under `python -X importtime` and
sums the import time per top-level package (self time: each module's own import, nested ones
counted where they are).
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float, dict[str, Any] | None, str]:
    """(wall s, child CPU s, the command's JSON output, its stderr)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else None
    except json.JSONDecodeError:
        out = None
    return wall, cpu, out, proc.stderr


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2])] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}


def _commands(root: Path) -> dict[str, tuple[list[str], Any]]:
    m = ["-m", "analogai_deploy"]
    return {
        "import analogai_deploy": (["-c", "import analogai_deploy"], None),
        "analogai-deploy --help": ([*m, "--help"], None),
        "certify LeNet (1 repeat, 1 time)": ([*m, "certify", str(root / "lenet"), "--repeats", "1", "--times", "1s",
                                             "--json"], lambda d: d["timing"]["convert_s"] + d["timing"]["monte_carlo_s"]),
        "certify LeNet --engine fast": ([*m, "certify", str(root / "lenet"), "--repeats", "1", "--times", "1s",
                                        "--engine", "fast", "--json"],
                                       lambda d: d["timing"]["convert_s"] + d["timing"]["monte_carlo_s"]),
        "recover LeNet (vanilla, 1 round)": ([*m, "recover", str(root / "lenet"), "--recipe", "vanilla", "-o",
                                             str(root / "rec"), "--json", "--overwrite", "training.rounds=1"],
                                            lambda d: d["training"]["seconds"]),
    }


def _setup() -> Path:
    root = Path(tempfile.mkdtemp(prefix="analogai-startup-"))
    _run(["-m", "analogai_deploy", "convert", "lenet", "-o", str(root / "lenet"), "--num-classes", "10", "--json"],
         _env())
    return root


def startup(n: int = 3, imports_too: bool = True) -> dict[str, Any]:
    root = _setup()
    env = _env()
    rows: dict[str, dict[str, list[float]]] = {}
    commands = _commands(root)
    for _ in range(n):  # interleaved, like the speed table
        for name, (args, work) in commands.items():
            wall, cpu, out, _ = _run(args, env)
            row = rows.setdefault(name, {"wall": [], "cpu": [], "work": []})
            row["wall"].append(wall)
            row["cpu"].append(cpu)
            row["work"].append(work(out) if work and out else 0.0)
    result: dict[str, Any] = {
        name: {"wall_s": statistics.median(r["wall"]), "cpu_s": statistics.median(r["cpu"]),
               "work_s": statistics.median(r["work"]),
               "before_work_s": statistics.median([w - k for w, k in zip(r["wall"], r["work"])])}
        for name, r in rows.items()}
    if imports_too:
        for name, (args, _) in commands.items():
            if name.startswith(("certify", "recover")):
                result[name]["imports_s"] = imports(args, env)
    return result


def imports(args: list[str], env: dict[str, str] | None = None, top: int = 8) -> dict[str, float]:
    """Import time per top-level package of one run of the command (python -X importtime), largest first."""
    _, _, _, err = _run(["-X", "importtime", *args], env or _env())
    per: dict[str, float] = {}
    for line in err.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.split(":", 1)[1].split("|")
        root = name.strip().split(".")[0]
        per[root] = per.get(root, 0.0) + int(self_us) / 1e6
    out = dict(sorted(per.items(), key=lambda kv: -kv[1])[:top])
    out["(all imports)"] = sum(per.values())
    return out


def startup_markdown(result: dict[str, Any]) -> str:
    rows = ["| (e) start-up, fresh process | wall | its own work (wall) | before work starts (wall) | whole process CPU | "
            "target |", "|---|---|---|---|---|---|"]
    for name, r in result.items():
        cpu = r.get("cpu_s")
        target = ""
        if "LeNet" in name:
            if r["before_work_s"] <= 3.0:
                target = "<= 3 s: met"
            else:
                target = f"<= 3 s wall: **missed by {r['before_work_s'] - 3:.1f} s** here"
                if cpu is not None:
                    target += f"; whole process CPU {cpu:.2f} s ({'within' if cpu <= 3 else 'over'} 3 s)"
        rows.append(f"| {name} | {r['wall_s']:.2f} s | {r['work_s']:.2f} s | {r['before_work_s']:.2f} s | "
                    f"{'-' if cpu is None else f'{cpu:.2f} s'} | {target} |")
    text = "\n".join(rows) + "\n"
    imp = {name: r["imports_s"] for name, r in result.items() if r.get("imports_s")}
    if imp:
        text += ("\nImport time by top-level package (`python -X importtime`, one run each; wall time, so "
                 "it grows with the machine's load: the shares are what carries over):\n\n")
        for name, per in imp.items():
            total = per.get("(all imports)") or sum(per.values()) or 1.0
            text += f"- {name}: all imports {total:.2f} s; " + ", ".join(
                f"{k} {v:.2f} s ({v / total:.0%})" for k, v in per.items() if k != "(all imports)") + "\n"
    return text
