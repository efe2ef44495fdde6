"""SIGKILL at the exact moments where a write commits: between the steps of a checkpoint, of a package
swap, of a zoo publish. Random kills rarely land in these windows of a few microseconds; here the child
kills itself on the call, so each window is tested every run.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from harness import RECOVER_OVERRIDES as _RECOVER  # noqa: E402
from harness import CrashPoint, Runner, package_state, sha256, tensors_equal  # noqa: E402

RECOVER_OVERRIDES = [o for o in _RECOVER if not o.startswith("training.rounds=")] + ["training.rounds=2"]

RECOVER_POINTS = [
    CrashPoint("checkpoint tensors written, state.json not yet replaced", "os:replace", "before", "state.json"),
    CrashPoint("package temp folder complete, not yet swapped in", "analogai_deploy.package.storage:swap", "before"),
    CrashPoint("package in place, checkpoint not yet removed", "analogai_deploy.recovery:discard_checkpoint",
               "before", ".partial"),
    CrashPoint("package in place, state.json removed, tensors not yet", "os:unlink", "after", "state.json"),
    CrashPoint("checkpoint tensors removed, folder not yet", "os:unlink", "after", "state-0002.safetensors"),
]


@pytest.fixture(scope="module")
def recover_ref(lenet_pkg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    run = Runner(tmp / "logs")
    assert run.to_end(["recover", lenet_pkg, "-o", tmp / "ref", "-q", *RECOVER_OVERRIDES]) == 0
    return tmp / "ref"


@pytest.mark.parametrize("point", RECOVER_POINTS, ids=lambda p: p.name)
def test_recover_crash_point(point, lenet_pkg, recover_ref, tmp_path):
    run = Runner(tmp_path / "logs")
    out = tmp_path / "out"
    argv = ["recover", lenet_pkg, "-o", out, "-q", *RECOVER_OVERRIDES]
    assert run.crash_at(argv, point), f"never reached: {point.name}\n{run.last_log.read_text()[-1500:]}"
    package_state(out)  # absent or complete, never half-written
    assert run.to_end(argv + ["--resume"]) == 0, run.last_log.read_text()[-1500:]
    assert tensors_equal(out / "model.safetensors", recover_ref / "model.safetensors")
    assert sha256(out / "model.safetensors") == sha256(recover_ref / "model.safetensors")
    assert not (tmp_path / "out.partial").exists()


def test_export_killed_between_the_renames_of_the_swap(lenet_pkg, tmp_path):
    """The old folder is parked as .NAME.old-PID when the kill lands; the next read puts it back."""
    from analogai_deploy import package as pkgio

    pkg = tmp_path / "pkg"
    shutil.copytree(lenet_pkg, pkg)
    run = Runner(tmp_path / "logs")
    assert run.crash_at(["export", pkg, "-q"], CrashPoint("swap half done", "os:rename", "before", ".tmp-"))
    assert not pkg.exists() and list(tmp_path.glob(".pkg.old-*"))  # the window really was hit
    assert package_state(pkg) == "complete"
    assert not (pkg / "model.onnx").exists() and "export" not in pkgio.read_config(pkg)  # the old state
    assert run.to_end(["export", pkg, "-q"]) == 0
    assert (pkg / "model.onnx").exists()
    assert pkgio.read_config(pkg)["export"]["onnx"]["sha256"] == sha256(pkg / "model.onnx")


def test_export_killed_while_the_old_folder_is_deleted(lenet_pkg, tmp_path):
    """The replaced folder is renamed to .NAME.trash-PID before deletion: nothing a read would restore."""
    from analogai_deploy import package as pkgio

    pkg = tmp_path / "pkg"
    shutil.copytree(lenet_pkg, pkg)
    run = Runner(tmp_path / "logs")
    point = CrashPoint("old folder being deleted", "shutil:rmtree", "before", ".pkg.")
    assert run.crash_at(["export", pkg, "-q"], point)
    assert not list(tmp_path.glob(".pkg.old-*"))
    assert (pkg / "model.onnx").exists() and package_state(pkg) == "complete"  # the new state
    shutil.rmtree(pkg)
    with pytest.raises(Exception, match="no package"):
        pkgio.read_config(pkg)  # nothing half-deleted comes back


PUBLISH_POINTS = [
    CrashPoint("entry folder swapped, index not yet written", "analogai_deploy.zoo.local:_write_index", "before"),
    CrashPoint("entry folder parked, new one not yet renamed in", "os:rename", "before", ".tmp-"),
    CrashPoint("index written, lock not yet released", "analogai_deploy.zoo.local:_write_index", "after"),
]


@pytest.mark.parametrize("point", PUBLISH_POINTS, ids=lambda p: p.name)
def test_publish_crash_point(point, lenet_pkg, tmp_path):
    """Replacing a zoo entry and dying anywhere: pull gives the old model or the new one, never an error."""
    from zoo_helpers import certified_copy

    from analogai_deploy import package as pkgio
    from analogai_deploy import zoo

    old = certified_copy(tmp_path / "old" / "digits-cnn")
    new = certified_copy(tmp_path / "new" / "digits-cnn", variant=1)
    shas = {pkgio.read_config(x)["weights"]["sha256"] for x in (old, new)}
    z = tmp_path / "zoo"
    run = Runner(tmp_path / "logs")
    assert run.to_end(["publish", old, "--zoo", z, "-q"]) == 0
    argv = ["publish", new, "--zoo", z, "--overwrite", "-q"]
    assert run.crash_at(argv, point), run.last_log.read_text()[-1500:]
    folder = zoo.locate("digits-cnn", zoo=z)
    assert pkgio.read_config(folder)["weights"]["sha256"] in shas
    zoo.pull("digits-cnn", zoo=z)
    assert run.to_end(argv) == 0, run.last_log.read_text()[-1500:]
    served = pkgio.read_config(zoo.locate("digits-cnn", zoo=z))["weights"]["sha256"]
    assert served == pkgio.read_config(new)["weights"]["sha256"]
