"""Resource limits: a batch that cannot fit in memory fails before training with a message; a disk that
fills up while a package is written leaves the previous package as it was."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess

import pytest

from analogai_deploy import package as pkgio


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


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 100 kB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


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
    assert len(lines) == 1 and "no space left" in lines[0].lower(), err
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

    monkeypatch.setattr(pkgio, "_fsync_tree", full)
    config = pkgio.read_config(pkg)
    with pytest.raises(OSError):
        pkgio.write(pkg, {**config, "note": "new"}, files={"extra.txt": b"x" * 1000}, base=pkg)
    assert _snapshot(pkg) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet"]
