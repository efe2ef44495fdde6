"""recover and certify on torch.distributed: 2 CPU processes (gloo on 127.0.0.1) give one process's results,
and a rank that fails stops the whole run with its message, within the timeout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from analogai_deploy import distributed, launcher

ROOT = Path(__file__).resolve().parents[1]

WORKER = """
import os, sys
import torch
torch.set_num_threads(1)
from analogai_deploy import distributed as D

mode = sys.argv[1]
if mode == "early" and os.environ["RANK"] == "1":
    raise SystemExit("rank 1 gives up before joining")
D.init()
if mode == "guard":
    with D.guard():
        if D.rank() == 1:
            raise ValueError("boom on rank 1")
    print("every rank passed the guard")
elif mode == "die":
    if D.rank() == 1:
        os._exit(3)
    D.all_gather("waiting for a rank that is gone")
elif mode == "early":
    D.all_gather("waiting for a rank that never came")
"""


def _env(rank: int, world: int, port: int, timeout: float) -> dict[str, str]:
    return {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), distributed.TIMEOUT_ENV: str(timeout),
            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run_ranks(script: Path, mode: str, world: int = 2, timeout: float = 20.0) -> list[tuple[int, str]]:
    """Start `world` ranks by hand (no launcher to kill anyone): what each rank does on its own."""
    port = launcher.free_port()
    procs = [subprocess.Popen([sys.executable, str(script), mode], env=_env(r, world, port, timeout),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout + 90)
        out.append((p.returncode, stdout + stderr))
    return out


@pytest.fixture
def worker(tmp_path) -> Path:
    path = tmp_path / "worker.py"
    path.write_text(WORKER)
    return path


def test_share_splits_every_item_once():
    for n in (0, 1, 5, 10):
        for ranks in (1, 2, 3):
            blocks = [distributed.share(n, ranks, r) for r in range(ranks)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(len(b) for b in blocks) - min(len(b) for b in blocks) <= 1


def test_not_distributed_without_torchrun_env(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.world() == 1 and distributed.rank() == 0 and distributed.is_main()
    with pytest.raises(ValueError):  # one process: a failure is simply raised
        with distributed.guard():
            raise ValueError("plain")


def test_bad_nproc_and_timeout_are_usage_errors(cli, lenet_pkg, monkeypatch):
    code, _, err = cli("certify", lenet_pkg, "--nproc", "0")
    assert code == 2 and "--nproc must be >= 1" in err
    code, _, err = cli("certify", lenet_pkg, "--nproc", "2", "--dist-timeout", "-1")
    assert code == 2 and "--dist-timeout" in err
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(Exception, match="positive number of seconds"):
        distributed.timeout_s()


def test_a_rank_that_raises_stops_every_rank_with_its_message(worker):
    (code0, out0), (code1, out1) = _run_ranks(worker, "guard")
    assert code0 != 0 and code1 != 0
    assert "rank 1: ValueError: boom on rank 1" in out0  # rank 0 says which rank failed and why
    assert "boom on rank 1" in out1
    assert "every rank passed the guard" not in out0 + out1


@pytest.mark.slow
def test_a_rank_that_dies_does_not_hang_the_others(worker):
    start = time.monotonic()
    (code0, out0), (code1, _) = _run_ranks(worker, "die", timeout=10.0)
    assert code1 == 3 and code0 != 0  # rank 0's collective fails (peer gone or timeout) instead of hanging
    assert time.monotonic() - start < 10.0 + 60.0


def test_launcher_stops_the_run_when_a_rank_fails_before_joining(worker):
    # rank 0 would wait in the rendezvous for the full timeout; the launcher kills it after GRACE_S instead
    start = time.monotonic()
    code = launcher.launch([str(worker), "early"], 2, timeout=300.0, env={"PYTHONPATH": str(ROOT)},
                           stdout=subprocess.DEVNULL)
    assert code != 0
    assert time.monotonic() - start < 120.0


def test_certify_on_two_processes_equals_one(cli, lenet_pkg, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(lenet_pkg, one)
    shutil.copytree(lenet_pkg, two)
    args = ["--repeats", "3", "--times", "1s,1d", "--limit", "200", "--seed", "7", "--json"]
    code, out, err = cli("certify", two, *args, "--nproc", "2")
    assert code == 0, err
    merged = json.loads(out)

    import analogai_deploy as ad

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker
    try:
        single = ad.certify(one, repeats=3, times="1s,1d", limit=200, seed=7)
    finally:
        torch.set_num_threads(threads)
    assert merged["seeds"] == single["seeds"] == [7, 8, 9]
    # no engine named: every process runs the default's choice and the certificate says why
    assert merged["engine"] == single["engine"] and merged["engine_reason"] == single["engine_reason"] != "named"
    for a, b in zip(merged["results"], single["results"]):
        assert a["time"] == b["time"]
        assert a["values"] == pytest.approx(b["values"], abs=1e-6)
        assert a["mean"] == pytest.approx(b["mean"], abs=1e-6)
    on_disk = json.loads((two / "certificate.json").read_text())  # rank 0 wrote the package, once
    assert on_disk["results"] == merged["results"]
    assert sum(1 for h in json.loads((two / "config.json").read_text())["provenance"]["history"]
               if h["stage"] == "certify") == 1


@pytest.mark.slow
def test_certify_failure_in_the_workers_is_reported_once_with_exit_1(cli, lenet_pkg, tmp_path):
    pkg = tmp_path / "tampered"
    shutil.copytree(lenet_pkg, pkg)
    weights = pkg / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    code, out, err = cli("certify", pkg, "--repeats", "2", "--times", "1s", "--nproc", "2")
    assert code == 1
    assert "certify on 2 processes: rank " in err and "sha256" in err  # both ranks fail; the first report wins
    assert not (pkg / "certificate.json").exists()


def _weights(pkg: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(pkg / "model.safetensors"))


def _recover_one_process(pkg: Path, out: Path, recipe: str, overrides: list[str]):
    import analogai_deploy as ad

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker
    try:
        return ad.recover(pkg, recipe, "digits", output=out, overrides=overrides)
    finally:
        torch.set_num_threads(threads)


def test_recover_msnat_on_two_processes_equals_one(cli, lenet_pkg, tmp_path):
    # 5 clients on 2 ranks (3 + 2), fusion injection as an all-reduce, 2 rounds so the fused model is trained on
    overrides = ["training.rounds=2"]
    code, out, err = cli("recover", lenet_pkg, "--recipe", "msnat", "-o", tmp_path / "two", "--nproc", "2", "--json",
                         *overrides)
    assert code == 0, err
    two = json.loads(out)
    one = _recover_one_process(lenet_pkg, tmp_path / "one", "msnat", overrides)
    assert two["training"]["clients"] == 5 and two["training"]["rounds"] == 2
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for key in a:  # only the order of the fusion sum differs; Adam carries that into round 2 (measured 4e-4)
        assert torch.allclose(a[key].float(), b[key].float(), atol=2e-3), key
    best1, best2 = one.config["training"]["best"], two["training"]["best"]
    assert best2["round"] == best1["round"]
    assert best2["val_acc"] == pytest.approx(best1["val_acc"], abs=0.01)
    log = [json.loads(line) for line in (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()]
    assert [len(e["clients"]) for e in log] == [5, 5]  # every client's stats reach rank 0's log
    assert [c["sigma"] for c in log[0]["clients"]] == [0.1, 0.15, 0.2, 0.25, 0.3]
    assert not (tmp_path / "two.partial").exists()


@pytest.mark.slow
def test_recover_data_parallel_on_two_processes_equals_one(mlp_pkg, tmp_path):
    # vanilla: no FI, so the ranks split every mini-batch; the MLP has no batch norm, so the match is float-tight
    import analogai_deploy as ad

    overrides = ["training.rounds=2"]
    two = ad.recover(mlp_pkg, "vanilla", "digits", output=tmp_path / "two", overrides=overrides, nproc=2)
    one = _recover_one_process(mlp_pkg, tmp_path / "one", "vanilla", overrides)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key  # measured 4e-7
    assert two.config["training"]["best"]["val_acc"] == pytest.approx(one.config["training"]["best"]["val_acc"],
                                                                      abs=1e-9)


def test_recover_refuses_what_cannot_be_distributed(cli, lenet_pkg, tmp_path):
    code, _, err = cli("recover", lenet_pkg, "--recipe", "msnat", "--nproc", "6", "-o", tmp_path / "x")
    assert code == 2 and "6 processes for 5 MSNAT clients" in err
    code, _, err = cli("recover", lenet_pkg, "--recipe", "hwa_aihwkit", "--nproc", "2", "-o", tmp_path / "x")
    assert code == 2 and "one process" in err


def test_recover_failure_on_a_rank_stops_the_run_with_its_message(cli, lenet_pkg, tmp_path):
    # an absurd learning rate: a client diverges inside the engine's guard; every rank stops, exit 1, no package
    code, _, err = cli("recover", lenet_pkg, "--recipe", "msnat", "-o", tmp_path / "div", "--nproc", "2",
                       "training.rounds=1", "training.lr=1e12")
    assert code == 1
    assert "recover on 2 processes: rank " in err and "training diverged" in err
    assert "rank 1: rank" not in err  # the failing rank is named once
    assert not (tmp_path / "div").exists()


def _module_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


@pytest.mark.slow
def test_certify_under_torchrun_equals_one_process(lenet_pkg, tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(lenet_pkg, pkg)
    args = ["certify", str(pkg), "--repeats", "3", "--times", "1s,1d", "--limit", "200", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(_module_cmd("torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                     "-m", "analogai_deploy", *args), capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    merged = json.loads(run.stdout)  # rank 0 alone prints
    single = subprocess.run(_module_cmd("analogai_deploy", *args), capture_output=True, text=True, env=env,
                            timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    assert [v for r in merged["results"] for v in r["values"]] == pytest.approx(
        [v for r in json.loads(single.stdout)["results"] for v in r["values"]], abs=1e-6)


@pytest.mark.slow
def test_distributed_recover_resumes_where_one_process_ends(lenet_pkg, tmp_path):
    import signal

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = _module_cmd("analogai_deploy", "recover", str(lenet_pkg), "--recipe", "msnat", "-o", str(tmp_path / "res"),
                      "--nproc", "2", "training.rounds=3")
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    meta = tmp_path / "res.partial" / "state.json"
    deadline = time.monotonic() + 300
    while not (meta.exists() and json.loads(meta.read_text())["round"] >= 1):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the launcher stops its workers, the round-1 checkpoint stays
    assert proc.wait(120) == 130
    resumed = subprocess.run(cmd + ["--resume", "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["training"]["resumed_from_round"] >= 1
    one = _recover_one_process(lenet_pkg, tmp_path / "one", "msnat", ["training.rounds=3"])
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "res")
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=5e-3), key
    assert json.loads(resumed.stdout)["training"]["best"]["val_acc"] == pytest.approx(
        one.config["training"]["best"]["val_acc"], abs=0.01)


def test_layers_have_no_import_circle():
    # distributed.py knows no stage; the stages never import the launcher that sits above them
    import ast

    def imports(path: Path) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                found.add(("." * node.level) + (node.module or "") + ":" + ",".join(a.name for a in node.names))
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        return found

    pkg = ROOT / "analogai_deploy"
    assert not [i for i in imports(pkg / "distributed.py") if any(s in i for s in ("certification", "recovery",
                                                                                     "launcher"))]
    for stage in [*(pkg / "certification").glob("*.py"), *(pkg / "recovery").glob("*.py")]:
        assert not [i for i in imports(stage) if "launcher" in i], stage
