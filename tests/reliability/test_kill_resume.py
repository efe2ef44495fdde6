"""SIGKILL at seeded random moments during `recover`, `export` and `publish`; after every kill the package
on disk is the old one or a complete new one, and a rerun ends exactly where an uninterrupted run ends.

Default suite: 3 trials each. `-m slow`: 20 trials each (the figures in docs/reliability.md).
"""
from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))  # zoo_helpers

from harness import RECOVER_OVERRIDES, Runner, Stats, package_state, sha256, tensors_equal  # noqa: E402

SEED = 2026


def _report(capsys, stats: Stats) -> None:
    with capsys.disabled():
        print("\n" + stats.line())
    assert stats.ok(), stats.failures[:5]


# ---- recover -----------------------------------------------------------------------------------------

def recover_trials(lenet_pkg: Path, reference: tuple[Path, float], tmp: Path, trials: int,
                   seed: int = SEED) -> Stats:
    from analogai_deploy.recovery import state_dir_for

    stats = Stats("recover")
    run = Runner(tmp / "logs")
    ref, t_ref = reference
    for i in range(trials):
        rng = random.Random(seed * 1000 + i)
        stats.trials += 1
        out = tmp / f"trial{i:02d}" / "out"
        argv = ["recover", lenet_pkg, "-o", out, "-q", *RECOVER_OVERRIDES]
        for k in range(rng.choice([1, 1, 2, 3])):
            resume = ["--resume"] if k else []
            if k:
                stats.resumes += 1
            if not run.kill_at(argv + resume, after=rng.uniform(0.02, 1.1) * t_ref):
                stats.finished_before_kill += 1
                continue
            stats.kills += 1
            stats.kills_after_checkpoint += (state_dir_for(out) / "state.json").exists()
            stats.checks += 1
            try:
                package_state(out)
            except AssertionError as exc:
                stats.half_written += 1
                stats.failures.append(str(exc))
        stats.resumes += 1
        code = run.to_end(argv + ["--resume"])
        if code != 0:
            stats.failures.append(f"trial {i}: resume exited {code}: {run.last_log.read_text()[-500:]}")
            continue
        if not tensors_equal(out / "model.safetensors", ref / "model.safetensors") or \
                sha256(out / "model.safetensors") != sha256(ref / "model.safetensors"):
            stats.mismatches += 1
            stats.failures.append(f"trial {i}: final weights differ from the uninterrupted run")
        if state_dir_for(out).exists():
            stats.failures.append(f"trial {i}: {state_dir_for(out)} left behind after a finished run")
    return stats


def test_recover_kill_resume(lenet_pkg, recover_reference, tmp_path, capsys):
    _report(capsys, recover_trials(lenet_pkg, recover_reference, tmp_path, trials=3))


@pytest.mark.slow
def test_recover_kill_resume_20(lenet_pkg, recover_reference, tmp_path, capsys):
    _report(capsys, recover_trials(lenet_pkg, recover_reference, tmp_path, trials=20))


# ---- export ------------------------------------------------------------------------------------------

def export_trials(lenet_pkg: Path, tmp: Path, trials: int, seed: int = SEED + 1) -> Stats:
    """A kill during `export` leaves the package without model.onnx, or with a complete, recorded one."""
    from analogai_deploy import package as pkgio

    stats = Stats("export")
    run = Runner(tmp / "logs")
    ref = tmp / "ref"
    shutil.copytree(lenet_pkg, ref)
    code, t_ref = run.timed(["export", ref, "-q"])
    assert code == 0, run.last_log.read_text()[-2000:]
    for i in range(trials):
        rng = random.Random(seed * 1000 + i)
        stats.trials += 1
        pkg = tmp / f"trial{i:02d}" / "pkg"
        shutil.copytree(lenet_pkg, pkg)
        if not run.kill_at(["export", pkg, "-q"], after=rng.uniform(0.02, 1.1) * t_ref):
            stats.finished_before_kill += 1
        else:
            stats.kills += 1
            stats.checks += 1
            try:
                package_state(pkg)
                config = pkgio.read_config(pkg)
                onnx_there = (pkg / "model.onnx").exists()
                if onnx_there != bool(config.get("export")):
                    raise AssertionError(f"{pkg}: model.onnx {'without' if onnx_there else 'missing for'} "
                                         "its record in config.json")
                if onnx_there and sha256(pkg / "model.onnx") != config["export"].get("onnx", {}).get("sha256"):
                    raise AssertionError(f"{pkg}: model.onnx does not match its record")
            except AssertionError as exc:
                stats.half_written += 1
                stats.failures.append(str(exc))
        stats.resumes += 1
        if run.to_end(["export", pkg, "-q"]) != 0:
            stats.failures.append(f"trial {i}: export after the kill failed: {run.last_log.read_text()[-500:]}")
            continue
        pkgio.verify(pkg)
        if sha256(pkg / "model.safetensors") != sha256(ref / "model.safetensors") or not (pkg / "model.onnx").exists():
            stats.mismatches += 1
            stats.failures.append(f"trial {i}: exported package differs from the uninterrupted export")
    return stats


def test_export_kill(lenet_pkg, tmp_path, capsys):
    _report(capsys, export_trials(lenet_pkg, tmp_path, trials=3))


@pytest.mark.slow
def test_export_kill_20(lenet_pkg, tmp_path, capsys):
    _report(capsys, export_trials(lenet_pkg, tmp_path, trials=20))


# ---- publish -----------------------------------------------------------------------------------------

def publish_trials(lenet_pkg: Path, tmp: Path, trials: int, seed: int = SEED + 2) -> Stats:
    """Replacing a zoo entry (--overwrite) and being killed: `pull` then gives the old or the new model."""
    from zoo_helpers import certified_copy

    from analogai_deploy import package as pkgio
    from analogai_deploy import zoo

    stats = Stats("publish")
    run = Runner(tmp / "logs")
    old = certified_copy(tmp / "old" / "digits-cnn")
    new = certified_copy(tmp / "new" / "digits-cnn", variant=1)  # other weights, same architecture
    old_sha, new_sha = (pkgio.read_config(x)["weights"]["sha256"] for x in (old, new))
    ref_zoo = tmp / "ref-zoo"
    assert run.to_end(["publish", old, "--zoo", ref_zoo, "-q"]) == 0
    code, t_ref = run.timed(["publish", new, "--zoo", ref_zoo, "--overwrite", "-q"])
    assert code == 0, run.last_log.read_text()[-2000:]
    for i in range(trials):
        rng = random.Random(seed * 1000 + i)
        stats.trials += 1
        z = tmp / f"zoo{i:02d}"
        assert run.to_end(["publish", old, "--zoo", z, "-q"]) == 0
        argv = ["publish", new, "--zoo", z, "--overwrite", "-q"]
        if not run.kill_at(argv, after=rng.uniform(0.02, 1.1) * t_ref):
            stats.finished_before_kill += 1
        else:
            stats.kills += 1
            stats.checks += 1
            try:
                folder = zoo.locate("digits-cnn", zoo=z)
                got = pkgio.read_config(folder)["weights"]["sha256"]
                if got not in (old_sha, new_sha):
                    raise AssertionError(f"zoo {z} serves weights {got[:12]} that are neither old nor new")
                json.loads((z / "index.json").read_text())
            except Exception as exc:  # anything but the old or the new entry is a failure
                stats.half_written += 1
                stats.failures.append(f"trial {i}: {type(exc).__name__}: {exc}")
        stats.resumes += 1
        if run.to_end(argv) != 0:
            stats.failures.append(f"trial {i}: publish after the kill failed: {run.last_log.read_text()[-500:]}")
            continue
        got = pkgio.read_config(zoo.locate("digits-cnn", zoo=z))["weights"]["sha256"]
        if got != new_sha:
            stats.mismatches += 1
            stats.failures.append(f"trial {i}: the zoo serves {got[:12]}, not the published {new_sha[:12]}")
    return stats


def test_publish_kill(lenet_pkg, tmp_path, capsys):
    _report(capsys, publish_trials(lenet_pkg, tmp_path, trials=3))


@pytest.mark.slow
def test_publish_kill_20(lenet_pkg, tmp_path, capsys):
    _report(capsys, publish_trials(lenet_pkg, tmp_path, trials=20))
