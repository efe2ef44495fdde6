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
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import RECOVER_OVERRIDES, Runner, Stats, sha256  # noqa: E402
from test_kill_resume import SEED, _report  # noqa: E402


def concurrent_trials(lenet_pkg: Path, reference: tuple[Path, float], tmp: Path, trials: int,
                      seed: int = SEED) -> tuple[Stats, dict[str, Any]]:
    """Each trial starts two runs together; then, by turns, a `--resume` while the survivor trains, or a
    SIGKILL of the survivor at a random moment and a run after it (which must report the stale lock)."""
    from analogai_deploy import lock
    from analogai_deploy.recovery import state_dir_for

    stats = Stats("concurrent writers")
    seen: dict[str, Any] = {"pairs": 0, "second_refused": 0, "waits": [], "live_resumes": 0,
                            "live_resumes_refused": 0, "stale_reported": 0}
    run = Runner(tmp / "logs")
    ref, t_ref = reference
    for i in range(trials):
        rng = random.Random(seed * 1000 + i)
        stats.trials += 1
        out = tmp / f"trial{i:02d}" / "out"
        argv = ["recover", lenet_pkg, "-o", out, *RECOVER_OVERRIDES]
        # two runs started together: exactly one trains, the other refuses before any training
        (a, log_a), (b, log_b) = run.start(argv), run.start(argv)
        started = time.perf_counter()
        procs = {a: log_a, b: log_b}
        seen["pairs"] += 1
        refused = None
        while refused is None and any(p.exitcode is None for p in procs):
            refused = next((p for p in procs if p.exitcode == 2), None)
            time.sleep(0.01)
        if refused is None:
            stats.failures.append(f"trial {i}: neither of two concurrent runs refused")
            continue
        seen["waits"].append(time.perf_counter() - started)
        live = next(p for p in procs if p is not refused)
        text = procs[refused].read_text()
        if f"pid {live.pid}" in text and "being written by another run" in text and "round=" not in text:
            seen["second_refused"] += 1
        else:
            stats.failures.append(f"trial {i}: the refusal does not name the live run: {text[-300:]}")
        if i % 2 == 0 and live.exitcode is None:  # a --resume while the survivor trains
            seen["live_resumes"] += 1
            code = run.to_end(argv + ["--resume"])
            if code == 2 and "being written by another run" in run.last_log.read_text() \
                    and "--restart" not in run.last_log.read_text():
                seen["live_resumes_refused"] += 1
            else:
                stats.failures.append(f"trial {i}: --resume during a live run exited {code}")
        elif live.exitcode is None:  # the survivor is SIGKILLed at a random moment
            live.join(rng.uniform(0.0, 0.6) * t_ref)
            if live.exitcode is None:
                live.kill()
                stats.kills += 1
                stats.kills_after_checkpoint += (state_dir_for(out) / "state.json").exists()
        live.join()
        if live.exitcode != 0:  # killed: the next run reports the stale lock and resumes
            stats.resumes += 1
            code = run.to_end(argv + ["--resume"])
            if code == 0 and "ended without releasing it" in run.last_log.read_text():
                seen["stale_reported"] += 1
            else:
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
    return stats, seen


def _print(capsys, seen: dict[str, Any]) -> None:
    waits = seen.pop("waits")
    with capsys.disabled():
        print("concurrent " + " ".join(f"{k}={v}" for k, v in seen.items())
              + (f" refused_after_s={min(waits):.2f}-{max(waits):.2f}" if waits else ""))


def test_concurrent_writers(lenet_pkg, recover_reference, tmp_path, capsys):
    stats, seen = concurrent_trials(lenet_pkg, recover_reference, tmp_path, trials=2)
    _report(capsys, stats)
    _print(capsys, seen)


@pytest.mark.slow
def test_concurrent_writers_many(lenet_pkg, recover_reference, tmp_path, capsys):
    stats, seen = concurrent_trials(lenet_pkg, recover_reference, tmp_path, trials=10)
    _report(capsys, stats)
    _print(capsys, seen)
