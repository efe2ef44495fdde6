"""No command deletes what the toolkit did not write: every output beside a user's file and sibling packages.

Each writing command (convert, recover, export, certify, certify --sweep, publish, pull) is pointed at: a
folder holding a user's file, a folder holding packages, an existing package (without and with --overwrite),
a package with a user's file inside, the working directory and its parents. Every refusal is exit 2 with
one line naming the folder, and afterwards every file around the target is byte for byte what it was.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analogai_deploy import package as pkgio

ROOT = Path(__file__).resolve().parents[1]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def site(tmp_path, lenet_pkg):
    """A user's working folder: a file of theirs, two packages, a folder of their own, a package with a note."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "important.txt").write_text("the user's own notes")
    for name in ("pkg-a", "pkg-b", "noted"):
        shutil.copytree(lenet_pkg, root / name)
    (root / "noted" / "notes.txt").write_text("a note the user keeps inside a package")
    (root / "mine").mkdir()
    (root / "mine" / "data.csv").write_text("1,2,3\n")
    return root


def _refused(code: int, err: str, *words: str) -> bool:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    return code == 2 and len(errors) == 1 and all(w in err for w in words)


TARGETS = {  # target -> words the error must contain
    "mine": ("mine", "not an analogai-deploy package"),
    ".": ("working directory",),
    "pkg-a": ("pkg-a", "--overwrite"),
    "noted": ("noted", "notes.txt"),
}


def _targets(root: Path):
    yield root / "mine", TARGETS["mine"]
    yield root, ("a parent of the working directory",)  # cwd is root/pkg-a's sibling folder below
    yield root / "pkg-a", TARGETS["pkg-a"]
    yield root / "noted", TARGETS["noted"]


@pytest.mark.parametrize("command", ["convert", "recover", "export", "certify", "sweep", "pull"])
def test_every_output_refuses_what_it_did_not_write(command, site, cli, monkeypatch, tmp_path):
    """Exit 2, one line, naming the folder; every file around it unchanged."""
    from analogai_deploy import zoo

    (site / "work").mkdir()
    monkeypatch.chdir(site / "work")
    if command == "pull":
        zoo_dir = tmp_path / "zoo"
        monkeypatch.setenv("ANALOGAI_ZOO", str(zoo_dir))
        from zoo_helpers import certified_copy

        zoo.publish(certified_copy(tmp_path / "entry"), name="digits")
    before = snapshot(site)
    argv = {
        "convert": ["convert", "lenet", "-o"],
        "recover": ["recover", site / "pkg-b", "training.rounds=1", "-o"],
        "export": ["export", site / "pkg-b", "-o"],
        "certify": ["certify", site / "pkg-b", "--repeats", "2", "--times", "1s", "--limit", "8", "-o"],
        "sweep": ["certify", site / "pkg-b", "--sweep", "out_noise=0,0.1", "--repeats", "1", "--times", "1s",
                  "--limit", "8", "-o"],
        "pull": ["pull", "digits", "-o"],
    }[command]
    for target, words in [*_targets(site), (site / "work", TARGETS["."]), (Path("."), TARGETS["."])]:
        code, _, err = cli(*argv, target)
        assert _refused(code, err, *words), (target, code, err)
        if target.name in ("pkg-a", "noted"):  # --overwrite replaces a package, never a user's file in one
            code, _, err = cli(*argv, target, "--overwrite")
            assert (code == 0) == (target.name == "pkg-a"), (target, err)
            if code == 0:
                before = {k: v for k, v in before.items() if not k.startswith("pkg-a/")}
                assert pkgio.is_package(target) and not pkgio.foreign_entries(target)
    after = {k: v for k, v in snapshot(site).items() if not k.startswith("pkg-a/")}
    assert after == before


@pytest.mark.parametrize("command", ["export", "certify"])
def test_in_place_update_refuses_a_package_holding_a_users_file(command, site, cli):
    before = snapshot(site)
    argv = ["export", site / "noted"] if command == "export" else [
        "certify", site / "noted", "--repeats", "2", "--times", "1s", "--limit", "8"]
    code, _, err = cli(*argv)
    assert _refused(code, err, "notes.txt", "-o")
    assert snapshot(site) == before
    code, _, err = cli(*argv, "-o", site / "copy")  # a copy of the package, the user's note stays put
    assert code == 0, err
    assert snapshot(site) == {**before, **{k: v for k, v in snapshot(site).items() if k.startswith("copy/")}}
    assert "notes.txt" not in os.listdir(site / "copy") and not pkgio.foreign_entries(site / "copy")


def test_in_place_updates_keep_sibling_packages_and_files(site, cli):
    """certify and export in place, side by side with the user's things: only the package itself changes."""
    before = snapshot(site)
    assert cli("export", site / "pkg-a", "-q")[0] == 0
    assert cli("certify", site / "pkg-a", "--repeats", "2", "--times", "1s", "--limit", "8", "-q")[0] == 0
    after = snapshot(site)
    assert {k: v for k, v in after.items() if not k.startswith("pkg-a/")} == \
        {k: v for k, v in before.items() if not k.startswith("pkg-a/")}
    assert {"model.onnx", "certificate.json"} <= set(os.listdir(site / "pkg-a"))
    assert sorted(p.name for p in site.iterdir()) == ["important.txt", "mine", "noted", "pkg-a", "pkg-b"]


def test_home_and_root_are_refused(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "keep.txt").write_text("x")
    for target in ("~", str(tmp_path), "/"):
        code, _, err = cli("convert", "lenet", "-o", target)
        assert code == 2 and ("home directory" in err or "not an analogai-deploy package" in err
                              or "parent of the working directory" in err), (target, err)
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_tilde_of_an_unknown_user_is_a_plain_name(cli, tmp_path, monkeypatch):
    """Found by fuzzing the -o targets: `~0` made Path.expanduser raise ("this is a bug")."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("convert", "lenet", "-o", "~0", "-q")
    assert code == 0, err
    assert pkgio.is_package(tmp_path / "~0")


def test_a_package_inside_a_package_is_refused(cli, site):
    code, _, err = cli("convert", "lenet", "-o", site / "pkg-a" / "sub")
    assert code == 2 and "inside the package" in err
    assert not (site / "pkg-a" / "sub").exists()


# ---- recover: checkpoints are continued or discarded on request only -------------------------------------

def _checkpoint(state: Path, rounds: int = 4) -> None:
    state.mkdir(parents=True)
    (state / "state.json").write_text(f'{{"round": {rounds}, "tensors": "state-000{rounds}.safetensors"}}')
    (state / f"state-000{rounds}.safetensors").write_bytes(b"\0" * 16)


def test_recover_never_deletes_a_checkpoint_unasked(cli, site):
    state = site / "out.partial"
    _checkpoint(state)
    before = snapshot(site)
    code, _, err = cli("recover", site / "pkg-a", "-o", site / "out", "training.rounds=1")
    assert _refused(code, err, "out.partial", "4 finished rounds", "--resume", "--restart")
    assert snapshot(site) == before
    code, _, err = cli("recover", site / "pkg-a", "-o", site / "out", "--resume", "--restart")
    assert code == 2 and "contradict" in err
    (state / "my-plot.png").write_bytes(b"png")  # something of the user's in the checkpoint folder
    code, _, err = cli("recover", site / "pkg-a", "-o", site / "out", "training.rounds=1", "--restart")
    assert _refused(code, err, "my-plot.png")
    (state / "my-plot.png").unlink()
    code, _, err = cli("recover", site / "pkg-a", "-o", site / "out", "training.rounds=1", "--restart", "-q")
    assert code == 0, err
    assert not state.exists() and pkgio.is_package(site / "out")
    assert {k: v for k, v in snapshot(site).items() if not k.startswith(("out/", "out.partial/"))} == \
        {k: v for k, v in before.items() if not k.startswith("out.partial/")}


def test_discarding_a_checkpoint_removes_only_checkpoint_files(tmp_path):
    from analogai_deploy.recovery.checkpoint import discard_checkpoint

    state = tmp_path / "x.partial"
    _checkpoint(state)
    (state / "keep.txt").write_text("mine")
    discard_checkpoint(state)
    assert sorted(os.listdir(state)) == ["keep.txt"]


# ---- read-only inputs: refused before any work, -o writes a copy -------------------------------------------

def _read_only_shell(folder: Path, script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `script` with `folder` read-only: a read-only bind mount for root (which ignores permissions),
    plain permissions otherwise."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    if os.geteuid() == 0:
        if not shutil.which("unshare"):
            pytest.skip("root without unshare: cannot make a read-only folder")
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("no mount namespace here: cannot make a read-only folder as root")
        script = (f"mount --bind '{folder}' '{folder}' && mount -o remount,bind,ro '{folder}' '{folder}' "
                  f"&& {script}")
        argv = ["unshare", "-m", "sh", "-c", script]
    else:
        folder.chmod(0o555)
        argv = ["sh", "-c", script]
    try:
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    finally:
        folder.chmod(0o755)


#: (command, expected exit code); the first in each list is refused before any work, the -o ones write a copy
READ_ONLY = {
    "default": [("certify ro/lenet --repeats 2 --times 1s --limit 8", 2),
                ("certify ro/lenet --repeats 2 --times 1s --limit 8 -o out/certified -q", 0)],
    "slow": [("export ro/lenet", 2), ("recover ro/lenet -o ro/out training.rounds=1", 2),
             ("export ro/lenet -o out/exported -q", 0)],
}


@pytest.mark.parametrize("which", ["default", pytest.param("slow", marks=pytest.mark.slow)])
def test_read_only_package_refused_before_any_work_and_copied_with_o(which, lenet_pkg, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copytree(lenet_pkg, ro / "lenet")
    before = snapshot(ro)
    cli = f"'{sys.executable}' -m analogai_deploy"
    cases = READ_ONLY[which]
    res = _read_only_shell(ro, "; ".join(f"{cli} {argv}; echo rc=$?" for argv, _ in cases), tmp_path)
    codes = [line for line in res.stdout.splitlines() if line.startswith("rc=")]
    assert codes == [f"rc={code}" for _, code in cases], res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == sum(code == 2 for _, code in cases) and all(str(ro) in e for e in errors), res.stderr
    assert "certify:" not in res.stderr and "round" not in res.stderr  # refused before any Monte Carlo or training
    assert res.stderr.count("hint: pass -o NEW_FOLDER") == sum(a.split()[0] != "recover" and c == 2 for a, c in cases)
    assert snapshot(ro) == before
    for argv, code in cases:
        if code == 0:
            out = tmp_path / argv.split(" -o ")[1].split()[0]
            assert (out / ("certificate.json" if argv.startswith("certify") else "model.onnx")).is_file()


# ---- one writer per output: a lock beside OUTPUT covers OUTPUT and OUTPUT.partial/ --------------------------

HOLD = """
import sys, time
from pathlib import Path
from analogai_deploy import lock
with lock.held(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def live_run(tmp_path):
    """Another process writing `site/out` now (it holds the output's lock, as a running recover does)."""
    procs = []

    def start(out: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_a_second_writer_is_refused_at_once_naming_the_live_run(cli, site, live_run):
    out = site / "out"
    _checkpoint(site / "out.partial")  # the live run's checkpoint
    holder = live_run(out)
    before = snapshot(site)
    for extra in ([], ["--resume"], ["--restart"]):
        code, _, err = cli("recover", site / "pkg-a", "-o", out, "training.rounds=1", *extra)
        assert _refused(code, err, "out", "being written by another run", f"pid {holder.pid}", "started"), err
        assert "--restart" not in err and "discard" not in err  # never a hint to delete a live run's checkpoint
        assert "round" not in err.replace("rounds=", "")  # refused before any training
    code, _, err = cli("convert", "lenet", "-o", out, "--num-classes", "10")
    assert _refused(code, err, f"pid {holder.pid}"), err
    assert snapshot(site) == before


def test_a_lock_left_by_a_killed_run_is_reported_as_stale_and_taken_over(cli, site, live_run):
    from analogai_deploy import lock

    out = site / "out"
    holder = live_run(out)
    holder.kill()  # SIGKILL: its lock file stays, its flock goes with the process
    holder.wait()
    assert lock.lock_path(out).exists()
    code, _, err = cli("recover", site / "pkg-a", "-o", out, "training.rounds=1", "training.batch_size=256",
                       "training.eval_draws=1", "recovery.noise_2=null", "recovery.noise_3=null",
                       "recovery.noise_4=null")
    assert code == 0, err
    assert f"pid {holder.pid}" in err and "ended without releasing it" in err
    assert pkgio.is_package(out) and not lock.lock_path(out).exists()
