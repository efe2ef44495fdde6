"""Run a stage on N local ranks: the `--nproc` launcher, above the stages it launches.

    analogai_deploy.certify("runs/lenet", repeats=40, nproc=4)   # = certification.certify on 4 processes
    analogai_deploy.recover("runs/lenet", "msnat", nproc=5)      # one MSNAT client per process

`certify`, `sweep` and `recover` here are the public verbs: with nproc=1 they are the stage functions
(certification.certify, certification.sweep, recovery.recover); with nproc > 1 they check everything the
stage would check, then start `nproc` workers of this module (`python -m analogai_deploy.launcher JOB`),
each of which calls the stage with WORLD_SIZE/RANK set, and return rank 0's result. The stages call only
the stage-free helpers of distributed.py, so nothing below imports this module.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import distributed
from .errors import OperationFailed, UsageError

if TYPE_CHECKING:
    from .certification import Certificate, CertifyConfig
    from .package import Package
    from .recovery.recipe import Recipe

GRACE_S = 5.0  # after one worker fails, how long the others get to exit on their own before they are killed


# ---- the public verbs with nproc -------------------------------------------------------------------------

def certify(package: str | Path | Package, config: CertifyConfig, *, progress: Callable[..., Any] | None = None,
            write: bool = True, output: str | Path | None = None, overwrite: bool = False, nproc: int = 1,
            dist_timeout: float | None = None) -> Certificate:
    """`certification.certify` of `config` (certification.settings_config builds one from keywords); nproc > 1
    spreads the repeats over that many local processes, with the same seed giving the same certificate."""
    from . import certification

    if nproc == 1:
        return certification.certify(package, config, progress=progress, write=write, output=output,
                                     overwrite=overwrite)
    distributed.check_nproc(nproc)
    run = certification.resolve(package, config)  # bad settings fail before any spawn
    package, cfg = run.package, run.config
    if not Path(package).is_dir():
        raise UsageError(f"no package folder at {package}", "pass the folder written by convert or recover")
    if write:
        certification.destination(package, output, overwrite)
    config_dict = cfg.to_dict()
    if run.engine_reason != "named":  # the workers choose again (the same engine) and say why, as one process does
        config_dict["engine"] = "auto"
    res = run_job("certify", {"package": str(Path(package).resolve()), "config": config_dict, "write": write,
                              "output": _abs(output), "overwrite": overwrite},
                  nproc, progress=progress is not None, timeout=dist_timeout)
    cert = certification.Certificate(res["certificate"])
    cert.timing = {**res["timing"], "processes": nproc}
    cert.split_hint = res.get("split_hint")
    cert.path = Path(res["path"]) if res.get("path") else None
    return cert


def sweep(package: str | Path | Package, param: str, values: list[float] | None = None, *,
          config: CertifyConfig | None = None, progress: Callable[..., Any] | None = None, write: bool = True,
          output: str | Path | None = None, overwrite: bool = False, nproc: int = 1,
          dist_timeout: float | None = None, **settings: Any) -> dict[str, Any]:
    """`certification.sweep` (the same arguments: `config`, or certify's keyword `settings`), optionally on
    `nproc` local processes."""
    from . import certification

    if nproc == 1:
        return certification.sweep(package, param, values, config=config, progress=progress, write=write,
                                   output=output, overwrite=overwrite, **settings)
    distributed.check_nproc(nproc)
    param, values, cfg, _ = certification.sweep_plan(package, param, values, config, settings)
    if write:
        certification.destination(getattr(package, "path", package), output, overwrite)
    return run_job("sweep", {"package": str(Path(getattr(package, "path", package)).resolve()), "param": param,
                             "values": values, "config": cfg.to_dict(), "write": write,
                             "output": _abs(output), "overwrite": overwrite},
                   nproc, progress=progress is not None, timeout=dist_timeout)


def _abs(path) -> str | None:
    return str(Path(path).resolve()) if path is not None else None


def recover(package: str | Path | Package, recipe: str | Path | Recipe = "msnat", data: Any = None,
            output: str | Path | None = None, *, overrides: list[str] | dict[str, Any] | None = None,
            resume: bool = False, restart: bool = False, overwrite: bool = False,
            progress: Callable[..., Any] | None = None, on_round: Callable[[dict], None] | None = None,
            log: Callable[[str], None] | None = None, nproc: int = 1,
            dist_timeout: float | None = None) -> Package | None:
    """Retrain `package` with `recipe` (a shipped name, a YAML path or a Recipe) on `data` and write the
    recovered package to `output` (recovery.recover). `overrides`: recipe fields by dotted key,
    ["training.rounds=5"] or {"training.rounds": 5}. `nproc` > 1 trains on that many local processes (MSNAT
    clients spread over them, other recipes data parallel). Returns the new package (None on the non-zero
    ranks of a torchrun job)."""
    from . import package as pkg_mod
    from . import recovery

    if nproc == 1:
        return recovery.recover(package, recipe, data, output, overrides=overrides, resume=resume,
                                restart=restart, overwrite=overwrite, progress=progress, on_round=on_round, log=log)
    from .recovery.parallel import check_recover

    distributed.check_nproc(nproc)
    if on_round is not None:
        raise UsageError("on_round runs in this process; with nproc > 1 training runs in others", "drop on_round")
    merged = recovery.merge_overrides(overrides, {})
    pkg, rec, ds = recovery.prepare(package, recipe, data, merged)
    if pkg.record.text:
        raise UsageError("text packages recover on one process", "drop `nproc`")
    data = data if data is not None else ds.spec
    out_path = recovery.output_for(pkg, rec, output)
    replace = recovery.check_outputs(out_path, recovery.run_identity(pkg, rec, ds), resume=resume, restart=restart,
                                     overwrite=overwrite)
    check_recover(rec, data, recipe, nproc)
    res = run_job("recover", {"package": str(pkg.path.resolve()), "recipe": str(recipe), "data": data,
                              "output": str(out_path.resolve()), "overrides": merged, "resume": resume,
                              "restart": restart, "overwrite": replace},
                  nproc, progress=progress is not None, timeout=dist_timeout)
    return pkg_mod.load(res["package"])


# ---- the launcher ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int, *, timeout: float | None = None, env: dict[str, str] | None = None,
           stdout: int | None = None) -> int:
    """Run `python ARGV` as `nproc` ranks on 127.0.0.1 and wait; returns the first non-zero exit code (or 0).

    When a worker fails the others get GRACE_S seconds to stop on their own (they usually fail too, with
    the same message), then they are killed: no run outlives its first failure by more than that.
    """
    distributed.check_nproc(nproc)
    port = str(free_port())
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    procs = []
    for r in range(nproc):
        worker_env = {**os.environ, **(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                      "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
                      "GROUP_RANK": "0"}
        worker_env.setdefault("OMP_NUM_THREADS", threads)  # as torchrun: the cores are shared by the ranks
        if timeout is not None:
            worker_env[distributed.TIMEOUT_ENV] = str(timeout)
        procs.append(subprocess.Popen([sys.executable, *argv], env=worker_env, stdout=stdout))
    code = 0
    try:
        failed_at = None
        while True:
            codes = [p.poll() for p in procs]
            bad = [c for c in codes if c not in (None, 0)]
            if bad and failed_at is None:
                code, failed_at = bad[0], time.monotonic()
            if all(c is not None for c in codes):
                break
            if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.05)
    except BaseException:  # Ctrl-C or an error here: never leave workers behind
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT) if sys.platform != "win32" else p.kill()
        for p in procs:
            try:
                p.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    return code if code >= 0 else 1  # killed by a signal -> a plain failure code


# ---- jobs: a Python API call run on N local ranks -----------------------------------------------------

def run_job(job: str, kwargs: dict[str, Any], nproc: int, *, progress: bool = False,
            timeout: float | None = None) -> dict[str, Any]:
    """Run JOBS[job](**kwargs) on `nproc` local ranks; rank 0's JSON result, or the failing rank's error."""
    distributed.check_nproc(nproc)
    with tempfile.TemporaryDirectory(prefix="analogai-dist-") as tmp:
        spec = Path(tmp) / "job.json"
        spec.write_text(json.dumps({"job": job, "kwargs": kwargs, "progress": progress}), encoding="utf-8")
        code = launch(["-m", __name__, str(spec)], nproc, timeout=timeout, stdout=_stderr_fd())
        result = Path(tmp) / "result.json"
        if code == 0 and result.exists():
            return json.loads(result.read_text(encoding="utf-8"))
        reports = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(tmp).glob("error-*.json"))]
        if reports:
            first = min(reports, key=lambda r: (r.get("time", 0.0), r["rank"]))
            cls = UsageError if first.get("exit_code") == 2 else OperationFailed
            err = cls(f"{job} on {nproc} processes: rank {first['rank']}: {first['message']}", first.get("hint"))
            err.exit_code = first.get("exit_code", err.exit_code)
            raise err
        raise OperationFailed(f"{job} on {nproc} processes: a worker exited with code {code}",
                              "see the messages above; ANALOGAI_DEBUG=1 shows each rank's traceback")


def _stderr_fd() -> int | None:
    """Workers' stdout goes to our stderr: the launching process alone prints results."""
    try:
        return sys.stderr.fileno()
    except (OSError, ValueError, AttributeError):  # a captured stderr without a descriptor
        return subprocess.DEVNULL


def _progress_factory(enabled: bool):
    if not enabled or not distributed.is_main():
        return None

    def bar(iterable=None, **kw):
        from tqdm.auto import tqdm

        return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kw)

    return bar


def _certify_job(kwargs: dict[str, Any], progress) -> dict[str, Any]:
    from .certification import CertifyConfig, certify as certify_stage

    cfg = CertifyConfig.from_dict(kwargs.pop("config"))
    cert = certify_stage(kwargs.pop("package"), config=cfg, progress=progress, **kwargs)
    return {"certificate": dict(cert), "timing": cert.timing, "path": str(cert.path) if cert.path else None,
            "split_hint": cert.split_hint}


def _sweep_job(kwargs: dict[str, Any], progress) -> dict[str, Any]:
    from .certification import CertifyConfig, sweep as sweep_stage

    cfg = CertifyConfig.from_dict(kwargs.pop("config"))
    return sweep_stage(kwargs.pop("package"), kwargs.pop("param"), kwargs.pop("values"), config=cfg, progress=progress,
                 **kwargs)


def _recover_job(kwargs: dict[str, Any], progress) -> dict[str, Any]:
    from .recovery import recover as recover_stage

    pkg = recover_stage(kwargs.pop("package"), kwargs.pop("recipe"), kwargs.pop("data"), kwargs.pop("output"),
                  progress=progress, **kwargs)
    return {"package": str(pkg.path) if pkg is not None else None}


JOBS = {"certify": _certify_job, "sweep": _sweep_job, "recover": _recover_job}


def run_worker(spec_path: str) -> int:
    """One rank of `run_job`: run the job; rank 0 writes result.json, a failing rank error-RANK.json."""
    import torch

    spec_file = Path(spec_path)
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    my_rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        distributed.init()
        result = JOBS[spec["job"]](spec["kwargs"], _progress_factory(spec["progress"]))
        if distributed.is_main():
            tmp = spec_file.with_name("result.json.tmp")
            tmp.write_text(json.dumps(result, default=str), encoding="utf-8")
            tmp.replace(spec_file.with_name("result.json"))
        return 0
    except Exception as exc:  # noqa: BLE001 - reported to the launching process, which raises it
        if os.environ.get("ANALOGAI_DEBUG"):
            traceback.print_exc()
        report = {**distributed.error_report(exc), "time": time.time()}
        report.setdefault("rank", my_rank)
        spec_file.with_name(f"error-{my_rank}.json").write_text(json.dumps(report), encoding="utf-8")
        return int(report.get("exit_code") or 1)
    finally:
        distributed.teardown()


if __name__ == "__main__":
    # run the importable module's worker, so its RankFailed is the class the library raises (not __main__'s)
    from analogai_deploy.launcher import run_worker

    sys.exit(run_worker(sys.argv[1]))
