"""(e) Start-up: how long a command takes before its work begins, in fresh processes, and what it imports.

Each command runs `n` times in a fresh interpreter (one torch thread, as the speed table), interleaved with
the other commands and, with `against` (another source tree, e.g. a git worktree of an older commit), with the
same command run from that tree, so before and after see the same machine load. The command marks when its
work starts and ends (analogai_deploy/_marks.py; certify: conversion + Monte Carlo, recover: training), which
splits every run into

    before work   interpreter start, imports, argument checks, loading the package and data  (the 3 s target)
    work          what the command is for
    after         writing the package and its plot, the interpreter's exit

Wall time and CPU time are both reported: on a shared machine wall time grows with the load, the process's
CPU time (user + system, all threads; at a mark from time.process_time, for the whole process from the
parent's rusage) far less. A tree without the marks gets "-" for the split. `imports()` runs each command
once more under `python -X importtime` and sums the import time per top-level package before the work,
during it and after it (self times: each module's own import, nested ones counted where they are; wall, so inflated by
the load and by the timing itself: the shares are what carries over).
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .._marks import ENV as MARKS_ENV, STDERR_PREFIX

HERE = Path(__file__).resolve().parents[2]  # this source tree
TARGET_S = 3.0  # issue 16: a LeNet certify or recover starts its work within 3 s wall
LENET = "LeNet"


def _commands(root: Path) -> dict[str, list[str]]:
    m = ["-m", "analogai_deploy"]
    lenet = str(root / "lenet")
    one = ["--repeats", "1", "--times", "1s", "--json"]
    return {
        "import analogai_deploy": ["-c", "import analogai_deploy"],
        "analogai-deploy --help": [*m, "--help"],
        f"certify {LENET} (1 repeat, 1 time)": [*m, "certify", lenet, *one],
        f"certify {LENET} (defaults: 10 repeats, 4 times)": [*m, "certify", lenet, "--json"],
        f"certify {LENET} --engine fast (1 repeat, 1 time)": [*m, "certify", lenet, *one, "--engine", "fast"],
        f"recover {LENET} (vanilla, 1 round)": [*m, "recover", lenet, "--recipe", "vanilla", "-o", str(root / "rec"),
                                                 "--json", "--overwrite", "training.rounds=1"],
    }


def tree_env(tree: Path) -> dict[str, str]:
    """The environment of a fresh process that runs the package of `tree`: one thread, offline."""
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != tree]
    return {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(tree), *rest])}


def timed_run(args: list[str], env: dict[str, str], timeout: float = 600) -> tuple[dict[str, float], str]:
    """One fresh process: ({wall_s, cpu_s, and with marks before_work_s/_cpu_s, work_s, after_s/_cpu_s}, stderr).
    It runs in the tree PYTHONPATH names first: `-m` and `-c` put the working folder ahead of PYTHONPATH, so
    from any other folder holding the package, that folder's code would run instead."""
    fd, marks_path = tempfile.mkstemp(prefix="analogai-marks-")
    os.close(fd)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.time()
        proc = subprocess.run([sys.executable, *args], env={**env, MARKS_ENV: marks_path}, capture_output=True,
                              text=True, timeout=timeout, cwd=env["PYTHONPATH"].split(os.pathsep)[0])
        end = time.time()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        marks: dict[str, dict[str, float]] = {}
        for line in Path(marks_path).read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            marks.setdefault(d["event"], d)
    finally:
        os.unlink(marks_path)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row = {"wall_s": end - start, "cpu_s": cpu}
    if "work" in marks and "work_done" in marks:
        w, d = marks["work"], marks["work_done"]
        row.update(before_work_s=w["time"] - start, before_work_cpu_s=w["cpu"], work_s=d["time"] - w["time"],
                   after_s=end - d["time"], after_cpu_s=cpu - d["cpu"])
    return row, proc.stderr


def _label(tree: Path) -> str:
    """The tree's commit, and whether its code (analogai_deploy/) has changes on top (git), for the record."""
    try:
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--", "analogai_deploy"],
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return str(tree)
    return f"{head}{' + uncommitted code changes' if dirty else ''}" if head else str(tree)


def _setup(tree: Path, root: Path) -> Path:
    _, err = timed_run(["-c", "import sys, analogai_deploy; print(analogai_deploy.__file__, file=sys.stderr)"],
                       tree_env(tree))
    if not Path(err.strip().splitlines()[-1]).resolve().is_relative_to(tree):  # else both sides run one tree
        raise RuntimeError(f"a process meant to run {tree} imported {err.strip()}")
    root.mkdir(parents=True, exist_ok=True)
    timed_run(["-m", "analogai_deploy", "convert", "lenet", "-o", str(root / "lenet"), "--num-classes", "10", "--json",
               "--overwrite"], tree_env(tree))
    return root


def startup(n: int = 3, against: str | Path | None = None, against_label: str | None = None,
            imports_too: bool = True, log=None) -> dict[str, Any]:
    """Every command `n` times, interleaved (and beside `against`'s, when given); medians per side."""
    trees = {"this": HERE}
    if against is not None:
        trees["against"] = Path(against).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="analogai-startup-"))
    try:
        roots = {side: _setup(tree, tmp / side) for side, tree in trees.items()}
        samples: dict[str, dict[str, list[dict[str, float]]]] = {}
        loads = [os.getloadavg()[0]]
        for i in range(n):
            if log:
                log(f"start-up: pass {i + 1} of {n}")
            for name in _commands(tmp):
                for side, tree in trees.items():
                    row, _ = timed_run(_commands(roots[side])[name], tree_env(tree))
                    samples.setdefault(name, {}).setdefault(side, []).append(row)
                    loads.append(os.getloadavg()[0])
        rows = {name: {side: _medians(runs) for side, runs in by_side.items()} for name, by_side in samples.items()}
        imports = {}
        if imports_too:
            for name, args in _commands(roots["this"]).items():
                if name.startswith(("certify", "recover")):
                    imports[name] = imports_of(args, tree_env(HERE))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    labels = {"this": _label(HERE)}
    if against is not None:
        labels["against"] = against_label or _label(trees["against"])
    return {"n": n, "trees": {side: str(t) for side, t in trees.items()}, "labels": labels,
            "load_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)},
            "cores": os.cpu_count(), "rows": rows, "imports": imports}


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(r) for r in runs))
    return {k: statistics.median(r[k] for r in runs) for k in sorted(keys)}


def imports_of(args: list[str], env: dict[str, str] | None = None, top: int = 8) -> dict[str, dict[str, float]]:
    """Import time per top-level package of one run of the command (python -X importtime) before the work,
    during it and after it, largest first; '(all)' is the sum of each part."""
    _, err = timed_run(["-X", "importtime", *args], env or tree_env(HERE))
    parts: dict[str, dict[str, float]] = {"before": {}, "work": {}, "after": {}}
    part = parts["before"]
    for line in err.splitlines():
        if line.startswith(STDERR_PREFIX):
            part = parts["after" if line[len(STDERR_PREFIX):].strip() == "work_done" else "work"]
            continue
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.split(":", 1)[1].split("|")
        root = name.strip().split(".")[0]
        part[root] = part.get(root, 0.0) + int(self_us) / 1e6
    out = {}
    for key, per in parts.items():
        out[key] = dict(sorted(per.items(), key=lambda kv: -kv[1])[:top])
        out[key]["(all)"] = sum(per.values())
    return out


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def startup_markdown(result: dict[str, Any]) -> str:
    labels = result["labels"]
    load = result["load_1min"]
    sides = [s for s in ("against", "this") if s in labels]
    text = (f"Medians of {result['n']} fresh processes per command and tree, interleaved; one torch thread; "
            f"{result['cores']} cores at a 1-minute load average of {load['min']:.1f}-{load['max']:.1f} (median "
            f"{load['median']:.1f}) during the run. Trees: "
            + "; ".join(f"{'before' if s == 'against' else 'now'} = {labels[s]}" for s in sides) + ".\n\n")
    rows = ["| command (fresh process) | tree | before work starts: wall / CPU | work (wall) | after it: wall / CPU | "
            f"whole process: wall / CPU | target: work starts within {TARGET_S:g} s wall |",
            "|---|---|---|---|---|---|---|"]
    for name, by_side in result["rows"].items():
        for side in sides:
            r = by_side.get(side)
            if r is None:
                continue
            bw = r.get("before_work_s")
            target = ""
            if LENET in name and bw is not None:
                target = "met" if bw <= TARGET_S else f"**missed by {bw - TARGET_S:.2f} s**"
            tree = "before" if side == "against" else "now"
            rows.append(f"| {name} | {tree} | {_s(bw)} / {_s(r.get('before_work_cpu_s'))} | {_s(r.get('work_s'))} | "
                        f"{_s(r.get('after_s'))} / {_s(r.get('after_cpu_s'))} | {_s(r['wall_s'])} / "
                        f"{_s(r['cpu_s'])} | {target} |")
    text += "\n".join(rows) + "\n"
    if result.get("imports"):
        text += ("\nImport time by top-level package, now (`python -X importtime`, one run each, self times in "
                 "wall seconds: inflated by the load and the timing, the shares carry over):\n\n")
        for name, parts in result["imports"].items():
            line = []
            for key, what in (("before", "before the work"), ("work", "during it"), ("after", "after it")):
                per = parts.get(key) or {}
                total = per.get("(all)") or 0.0
                if key == "work" and total < 0.01:
                    continue
                top = ", ".join(f"{k} {v:.2f} s" for k, v in per.items() if k != "(all)" and v >= 0.01)
                line.append(f"{what} {total:.2f} s ({top or 'nothing over 0.01 s'})")
            text += f"- {name}: " + "; ".join(line) + "\n"
    return text


def startup_main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line of bench/startup.py."""
    import argparse

    ap = argparse.ArgumentParser(prog="bench/startup.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5, help="fresh processes per command and tree")
    ap.add_argument("--against", default=None, help="another source tree to run beside this one (e.g. a git "
                    "worktree of the commit before a change): before / after under the same load")
    ap.add_argument("--against-label", default=None, help="what to call it in the table (default: its commit)")
    ap.add_argument("--no-imports", action="store_true", help="skip the -X importtime runs")
    ap.add_argument("--markdown", default="BENCHMARKS.md", help="file whose startup section is rewritten ('' = none)")
    ap.add_argument("--json", default="runs/bench/startup.json", help="where the raw result goes ('' = none)")
    args = ap.parse_args(argv)
    result = startup(args.n, args.against, args.against_label, not args.no_imports,
                     log=lambda msg: print(msg, file=sys.stderr, flush=True))
    text = startup_markdown(result)
    if args.markdown:
        from .common import update_markdown

        update_markdown(args.markdown, "startup", text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(text)
    return result
