"""Concurrent writers: two `recover -o OUT` started together, a `--resume` started while the first is live, and
a run started after a SIGKILLed one. One writer per output (analogai_deploy/lock.py): the second refuses at
once (exit 2, naming the live run's pid), the first ends exactly where an uninterrupted run ends, and a lock
left by a killed run is reported as stale and taken over.

Default suite: 2 trials. `-m slow`: 10 trials (the figures in docs/reliability.md).
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import Runner, Stats, sha256  # noqa: E402
from test_kill_resume import RECOVER_OVERRIDES, SEED, _report  # noqa: E402


def concurrent_trials(lenet_pkg: Path, tmp: Path, trials: int, seed: int = SEED) -> tuple[Stats, list[float]]:
    from analogai_deploy import lock
    from analogai_deploy.recovery import state_dir_for

    stats = Stats("concurrent writers")
    waits: list[float] = []  # seconds from a second writer's start to its refusal
    run = Runner(tmp / "logs")
    ref = tmp / "ref"
    code, t_ref = run.timed(["recover", lenet_pkg, "-o", ref, "-q", *RECOVER_OVERRIDES])
    assert code == 0, run.last_log.read_text()[-2000:]
    for i in range(trials):
        rng = random.Random(seed * 1000 + i)
        stats.trials += 1
        out = tmp / f"trial{i:02d}" / "out"
        argv = ["recover", lenet_pkg, "-o", out, *RECOVER_OVERRIDES]
        # 1. two runs started together: exactly one trains, the other refuses before any training
        (a, log_a), (b, log_b) = run.start(argv), run.start(argv)
        started = time.perf_counter()
        procs = {a: log_a, b: log_b}
        refused = None
        while refused is None and any(p.exitcode is None for p in procs):
            refused = next((p for p in procs if p.exitcode == 2), None)
            time.sleep(0.01)
        if refused is None:
            stats.failures.append(f"trial {i}: neither of two concurrent runs refused")
            continue
        waits.append(time.perf_counter() - started)
        live = next(p for p in procs if p is not refused)
        text = procs[refused].read_text()
        if f"pid {live.pid}" not in text or "being written by another run" not in text or "round=" in text:
            stats.failures.append(f"trial {i}: the refusal does not name the live run: {text[-300:]}")
        # 2. a --resume while the first still trains (when it is still running) refuses too
        if live.exitcode is None:
            stats.resumes += 1
            code = run.to_end(argv + ["--resume"])
            if code != 2 or "--restart" in run.last_log.read_text():
                stats.failures.append(f"trial {i}: --resume during a live run exited {code}")
        # 3. the live run is killed at a random moment, or runs to the end
        if rng.random() < 0.5 and live.exitcode is None:
            live.join(rng.uniform(0.1, 0.9) * t_ref)
            if live.exitcode is None:
                live.kill()
                stats.kills += 1
        live.join()
        if live.exitcode != 0:  # killed: the next run reports the stale lock and resumes
            stats.resumes += 1
            code = run.to_end(argv + ["--resume"])
            if code != 0 or "ended without releasing it" not in run.last_log.read_text():
                stats.failures.append(f"trial {i}: the run after a kill exited {code} or did not report the "
                                      f"stale lock: {run.last_log.read_text()[-300:]}")
                continue
        else:
            stats.finished_before_kill += 1
        stats.checks += 1
        if sha256(out / "model.safetensors") != sha256(ref / "model.safetensors"):
            stats.mismatches += 1
            stats.failures.append(f"trial {i}: final weights differ from the uninterrupted run")
        if state_dir_for(out).exists() or lock.lock_path(out).exists():
            stats.failures.append(f"trial {i}: a checkpoint or lock file left behind after a finished run")
    return stats, waits


def _waits(capsys, waits: list[float]) -> None:
    with capsys.disabled():
        print(f"second writer refused after {min(waits):.2f}-{max(waits):.2f} s (start-up and data included)")


def test_concurrent_writers(lenet_pkg, tmp_path, capsys):
    stats, waits = concurrent_trials(lenet_pkg, tmp_path, trials=2)
    _report(capsys, stats)
    _waits(capsys, waits)


@pytest.mark.slow
def test_concurrent_writers_many(lenet_pkg, tmp_path, capsys):
    stats, waits = concurrent_trials(lenet_pkg, tmp_path, trials=10)
    _report(capsys, stats)
    _waits(capsys, waits)
