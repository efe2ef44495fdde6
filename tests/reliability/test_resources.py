"""Resource limits: a batch that cannot fit in memory fails before training with a message; a disk that
fills up while a package is written leaves the previous package as it was."""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess

import pytest

from analogai_deploy import package as pkgio
from analogai_deploy.package import storage
from analogai_deploy.errors import OperationFailed


def test_batch_far_too_large_fails_before_training(cli, tmp_path):
    """ResNet-18 on 128x128 digits with the whole training set as one batch needs ~100 GiB: refused at once."""
    import torch

    from analogai_deploy.recovery.memory import available_bytes

    pkg = tmp_path / "r18"
    assert cli("convert", "resnet18", "-o", pkg, "--num-classes", "10", "--input-shape", "3,128,128", "-q")[0] == 0
    if (available_bytes(torch.device("cpu")) or 0) > 400 * 2**30:
        pytest.skip("this machine has room for the batch")
    out = tmp_path / "out"
    code, _, err = cli("recover", pkg, "-o", out, "training.batch_size=1000000", "training.device=cpu")
    assert code == 2, err
    assert "training.batch_size=1000000 would need about" in err and "GiB" in err and "fits" in err, err
    assert not out.exists() and not (tmp_path / "out.partial").exists()  # refused before any training


def test_small_runs_pass_the_memory_check(lenet_pkg):
    import torch

    from analogai_deploy.recovery import prepare
    from analogai_deploy.recovery.memory import check_fits

    pkg, rec, ds = prepare(lenet_pkg, "msnat", "digits", ["training.batch_size=100000"])  # capped by the data
    est = check_fits(pkg.model, rec, ds, torch.device("cpu"))
    assert 0 < est["need_gib"] < 1
    # each of the 4 passes of a feedback step keeps its own programmed copy of the analog weights for backward
    analog = sum(m.weight.numel() for m in pkg.model.modules() if hasattr(m, "analog"))
    assert est["programmed_gib"] * 2**30 == analog * 4 * 4


def test_an_lms_validation_batch_stays_within_a_training_step(tmp_path, lenet_pkg):
    """Validation's output-sized tensors (an LM's logits, the teacher's, the loss's) at its batch fit in the
    activations a training step was estimated to hold, so validation never sets the run's peak; an image
    classifier, whose outputs are small, still validates 256 a batch."""
    import torch

    import analogai_deploy as ad
    from analogai_deploy.recovery import prepare
    from analogai_deploy.recovery.memory import VAL_BATCH, check_fits, step_bytes, validation_batch
    from hf_models import gpt2_lm

    pkg = ad.convert(f"hf:{gpt2_lm(tmp_path / 'gpt2')}", output=tmp_path / "pkg").path
    model, rec, ds = prepare(pkg, "single_noise", "corpus", ["training.batch_size=8"])
    per_sample, per_val = step_bytes(model.model, rec, ds)
    batch = validation_batch(model.model, rec, ds)
    assert 8 <= batch < VAL_BATCH and batch * per_val <= per_sample * 8 < (batch + 1) * per_val
    # the estimate counts the loss's logits-sized tensors: more than the leaf outputs alone
    assert check_fits(model.model, rec, ds, torch.device("cpu"), teacher=True)["need_gib"] * 2**30 > per_sample * 8

    lenet, rec, ds = prepare(lenet_pkg, "msnat", "digits")
    assert validation_batch(lenet.model, rec, ds) == VAL_BATCH


@pytest.fixture
def disk(tmp_path):
    """disk(size) -> a real tmpfs of that size, which runs out of space (ENOSPC) as a full disk does (needs
    root and mount; skipped where it cannot be mounted). disk.resize(mnt, size) makes room again."""
    mounted = []
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")

    def mount(size: str):
        mnt = tmp_path / f"disk{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt

    mount.resize = lambda mnt, size: subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)
    try:
        yield mount
    finally:
        for mnt in mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def tiny_disk(disk):
    """A real 100 kB tmpfs."""
    return disk("100k")


def _snapshot(path):
    return {f.name: f.read_bytes() for f in sorted(path.iterdir())}


def test_disk_full_keeps_the_previous_package(lenet_pkg, tiny_disk, cli):
    """LeNet's package (~64 kB) fits; exporting it needs a second copy plus model.onnx and does not."""
    pkg = tiny_disk / "lenet"
    shutil.copytree(lenet_pkg, pkg)
    before = _snapshot(pkg)
    code, _, err = cli("export", pkg)
    assert code == 1, err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert lines == [f"error: the disk is full: could not write {pkg}; the package there is kept as it was"], err
    assert "this is a bug" not in err and "Traceback" not in err
    assert _snapshot(pkg) == before  # byte for byte the old package
    pkgio.load(pkg)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["lenet"]  # the temp folder went too


def test_disk_full_mid_write_everywhere(lenet_pkg, tmp_path, monkeypatch):
    """Portable form: the disk fills after the new files are written, before the swap."""
    pkg = tmp_path / "lenet"
    shutil.copytree(lenet_pkg, pkg)
    before = _snapshot(pkg)

    def full(_folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage, "fsync_tree", full)
    config = pkgio.read_config(pkg)
    with pytest.raises(OperationFailed, match="the disk is full: could not write .*; the package there is kept"):
        pkgio.write(pkg, {**config, "note": "new"}, files={"extra.txt": b"x" * 1000}, base=pkg)
    assert _snapshot(pkg) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet"]


RECOVER = ["--recipe", "vanilla", "training.rounds=2"]  # the MLP's checkpoint: 425 kB


def _errors(err: str) -> list[str]:
    assert "this is a bug" not in err and "Traceback" not in err, err
    return [x for x in err.splitlines() if x.startswith("error:")]


def test_disk_full_while_recover_writes_a_checkpoint(mlp_pkg, disk, cli):
    """Round 1's checkpoint fits on the 700 kB disk; round 2's, written beside it before round 1's goes, does
    not. Was: "SafetensorError ... (os error 28)", "this is a bug"."""
    mnt = disk("700k")
    out = mnt / "out"
    code, _, err = cli("recover", mlp_pkg, "-o", out, *RECOVER)
    assert code == 1, err
    assert _errors(err) == [f"error: the disk is full: could not write the checkpoint of round 2 in {out}.partial; "
                            "round 1's checkpoint there is kept"]
    assert "hint: free space there and rerun the same command with --resume" in err
    partial = mnt / "out.partial"
    assert sorted(os.listdir(partial)) == ["state-0001.safetensors", "state.json", "train_log.jsonl"]  # no .tmp
    assert json.loads((partial / "state.json").read_text())["round"] == 1 and not out.exists()
    disk.resize(mnt, "8m")  # room again: the run continues where it stopped and ends
    code, text, err = cli("recover", mlp_pkg, "-o", out, *RECOVER, "--resume")
    assert code == 0, err
    assert "round 1 from the checkpoint" in text and not partial.exists()
    pkgio.load(out)


def test_disk_full_at_the_first_checkpoint_leaves_nothing(mlp_pkg, disk, cli):
    """Was: an empty OUTPUT.partial/ left behind."""
    mnt = disk("300k")
    code, _, err = cli("recover", mlp_pkg, "-o", mnt / "out", *RECOVER)
    assert code == 1, err
    assert _errors(err) == [f"error: the disk is full: could not write the checkpoint of round 1 in {mnt}/out.partial; "
                            "no round was checkpointed, nothing is left there"]
    assert "--resume" not in err and os.listdir(mnt) == []


def test_a_file_size_limit_at_the_first_checkpoint_everywhere(mlp_pkg, tmp_path):
    """Portable form (no root): RLIMIT_FSIZE below the checkpoint's 425 kB makes the kernel refuse the write
    (EFBIG, SIGXFSZ ignored as a shell's `ulimit -f` user would see it) wherever the test runs."""
    import sys

    child = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1])); "
             "from analogai_deploy.cli.app import main; sys.exit(main(sys.argv[1:]))")
    r = subprocess.run([sys.executable, "-c", child, "recover", str(mlp_pkg), "-o", str(tmp_path / "out"), *RECOVER],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 1, r.stderr
    assert _errors(r.stderr) == [f"error: a file grew past the size limit: could not write the checkpoint of round 1 "
                                 f"in {tmp_path}/out.partial; no round was checkpointed, nothing is left there"]
    assert sorted(os.listdir(tmp_path)) == []
