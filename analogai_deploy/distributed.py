"""torch.distributed for `recover` and `certify`: one place for start-up, ranks, timeouts and failures.

Two ways in, same code path:

    analogai-deploy certify PKG --nproc 4                      # this module spawns 4 local workers
    torchrun --nproc-per-node 4 -m analogai_deploy certify PKG # torchrun spawns them (one or many machines)

A process is a rank of a distributed run when WORLD_SIZE > 1 in its environment (torchrun and the
`--nproc` launcher both set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); the process group starts on
first use (`world()`), gloo on CPU, gloo + NCCL (`cpu:gloo,cuda:nccl`) where CUDA is available.

Failures: a rank whose part raises does not leave the others waiting. Work that may fail on one rank
only runs inside `guard()`, which ends in a collective where every rank says whether its part failed;
if one did, every rank raises `RankFailed` with that rank's message. A rank that dies outright is seen
by the launcher, which stops the others at once (torchrun does the same); collectives time out after
`ANALOGAI_DIST_TIMEOUT` seconds (default 1800, `--dist-timeout`) as the last resort, so no run hangs.
Only rank 0 writes packages, certificates and checkpoints.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from .errors import AnalogAIError, OperationFailed, UsageError

TIMEOUT_ENV = "ANALOGAI_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0  # a rank may wait this long for a slower one (e.g. 3 vs 2 MSNAT clients per round)
GRACE_S = 5.0  # after one worker fails, how long the others get to exit on their own before they are killed


class RankFailed(OperationFailed):
    """Another rank's part failed; carries that rank's message, hint and exit code."""

    def __init__(self, rank: int, message: str, hint: str | None = None, exit_code: int = 1):
        super().__init__(f"rank {rank}: {message}", hint)
        self.rank = rank
        self.origin_message = message
        self.exit_code = exit_code


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UsageError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds", f"e.g. {TIMEOUT_ENV}=600")
    return value


def _env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _initialized() -> bool:
    if "torch.distributed" not in sys.modules:  # nobody started a group: keep `--help` and 1-process runs light
        return False
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _rank_now() -> int:
    """This rank without starting anything (error reports must not depend on the group being up)."""
    if _initialized():
        import torch.distributed as dist

        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def init(timeout: float | None = None) -> bool:
    """Join the process group the environment describes (torchrun / --nproc); False when not distributed."""
    if _initialized():
        return True
    if _env_world() <= 1:
        return False
    import torch
    import torch.distributed as dist

    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise UsageError(f"WORLD_SIZE={_env_world()} but {', '.join(missing)} is not set",
                         "launch with torchrun or --nproc N, which set them")
    backend = "gloo"
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local % torch.cuda.device_count())  # "cuda" then means this rank's GPU
        backend = "cpu:gloo,cuda:nccl"  # CPU tensors (certify, small objects) via gloo, CUDA tensors via NCCL
    with _quiet_stdout():  # gloo prints "[Gloo] Rank 0 is connected to ..." on stdout, which would break --json
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout or timeout_s()))
        dist.barrier()  # connect now, while stdout is redirected
    atexit.register(teardown)
    return True


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no real stdout to protect
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def teardown() -> None:
    if _initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


def world() -> int:
    """How many ranks this run has (1 = not distributed); starts the process group on first use."""
    if not init():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def rank() -> int:
    if not init():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def is_main() -> bool:
    return rank() == 0


def share(n: int, ranks: int | None = None, r: int | None = None) -> range:
    """This rank's contiguous block of n items (the first n % ranks ranks take one more)."""
    ranks = world() if ranks is None else ranks
    r = rank() if r is None else r
    base, extra = divmod(n, ranks)
    start = r * base + min(r, extra)
    return range(start, start + base + (1 if r < extra else 0))


def all_gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (pickled between the run's own processes only)."""
    if world() == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _describe(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RankFailed):
        return {"rank": exc.rank, "message": exc.origin_message, "hint": exc.hint,
                "exit_code": exc.exit_code}
    if isinstance(exc, AnalogAIError):
        return {"rank": _rank_now(), "message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
    return {"rank": _rank_now(), "message": f"{type(exc).__name__}: {exc}", "exit_code": 1,
            "hint": "rerun with ANALOGAI_DEBUG=1 to see each rank's traceback"}


def agree(error: BaseException | None) -> None:
    """Collective: every rank reports its part; if any failed, every rank raises the first failure."""
    if world() == 1:
        if error is not None:
            raise error
        return
    reports = all_gather(None if error is None else _describe(error))
    failed = [r for r in reports if r is not None]
    if failed:
        first = min(failed, key=lambda r: r["rank"])
        if error is not None and first["rank"] == _rank_now() and not isinstance(error, RankFailed):
            raise error  # this rank's own failure keeps its type and traceback
        raise RankFailed(first["rank"], first["message"], first.get("hint"), first.get("exit_code", 1)) from error


@contextmanager
def guard() -> Iterator[None]:
    """Run a block that may fail on some ranks only; afterwards all ranks agree (see `agree`)."""
    error: BaseException | None = None
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - reported to every rank, then re-raised by agree()
        if os.environ.get("ANALOGAI_DEBUG"):
            traceback.print_exc()
        error = exc
    agree(error)


# ---- recover: data parallel (one model) and MSNAT clients over ranks ---------------------------------

class DataParallel:
    """DDP's arithmetic for the loop trainer: each rank takes its slice of every global mini-batch, and
    the gradients are summed with weights n_rank / n_batch, so every rank applies the full batch's mean
    gradient (bitwise the same on every rank, so the replicas never drift apart). All ranks draw the
    same weight noise (same seed, same calls), as one process would; a replica's batch-norm statistics
    and QAT activation ranges are averaged at the end of each epoch. Several forward passes per step (FL)
    and SAM's two backward passes need no special hooks this way, which DDP's wrapper would.
    """

    def __init__(self):
        self.world, self.rank = world(), rank()
        self.weight = 1.0

    def slice(self, x, y):
        n = len(y)
        if n < self.world:  # a tiny last batch: every rank takes all of it, each a 1/world share
            self.weight = 1.0 / self.world
            return x, y
        part = share(n, self.world, self.rank)
        self.weight = len(part) / n
        return x[part.start:part.stop], y[part.start:part.stop]

    def sync_grads(self, model) -> None:
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads]).mul_(self.weight)
        dist.all_reduce(flat)
        torch._foreach_copy_(grads, [t.view_as(g) for t, g in zip(flat.split([g.numel() for g in grads]), grads)])

    def sum(self, *values):
        """Per-epoch totals (loss sums, correct counts) over all ranks."""
        import torch
        import torch.distributed as dist

        flat = torch.stack([v.reshape(()).float() for v in values])
        dist.all_reduce(flat)
        return list(flat.unbind())

    def sync_state(self, model) -> None:
        """Average the float buffers (batch-norm statistics) and QAT activation ranges over the replicas."""
        import torch

        from .recovery.msnat import _act_quantizers

        buffers = [b for b in model.buffers() if b.is_floating_point()]
        quant = [q for q in _act_quantizers(model) if q is not None and q.act_max is not None]
        tensors = buffers + [q.act_max for q in quant]
        if tensors:
            averaged = _all_reduce_flat([t.detach().reshape(-1).float() for t in tensors], 1.0 / self.world)
            with torch.no_grad():
                for b, v in zip(buffers, averaged):
                    b.copy_(v.view_as(b))
            for q, v in zip(quant, averaged[len(buffers):]):
                q.act_max = v.view_as(q.act_max).to(q.act_max.dtype)


def _all_reduce_flat(tensors, scale: float = 1.0):
    """Sum (times `scale`) of each tensor over all ranks, in one collective; returns new tensors."""
    import torch
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    if scale != 1.0:
        flat.mul_(scale)
    return list(flat.split([t.numel() for t in tensors]))


def check_recover(recipe, data: Any = "digits", recipe_arg: Any = "msnat", nproc: int = 1) -> None:
    """What a distributed recover cannot do, refused before any process starts training."""
    t, sigmas = recipe.training, recipe.recovery.sigmas
    if t.engine == "aihwkit_hwa":
        raise UsageError("training.engine=aihwkit_hwa (aihwkit's own trainer) runs on one process",
                         "drop --nproc / torchrun, or use an MSNAT-family recipe (vanilla, single_noise, msnat, ...)")
    if t.mode == "batched":
        raise UsageError("training.mode=batched stacks every client in one process", "use training.mode=loop")
    if nproc > 1:
        if not isinstance(data, str):
            raise UsageError("with nproc the dataset goes by name", "pass data as a spec, e.g. 'digits'")
        if not isinstance(recipe_arg, (str, Path)):
            raise UsageError("with nproc the recipe goes by name or file", "pass 'msnat' or a YAML path, plus overrides")
        if t.use_FI and len(sigmas) > 1 and nproc > len(sigmas):
            raise UsageError(f"{nproc} processes for {len(sigmas)} MSNAT clients: a process would have no client",
                             f"use --nproc {len(sigmas)} or fewer")


def client_share(k: int) -> range:
    """The MSNAT clients this rank trains; every rank needs at least one."""
    n = world()
    if n > k:
        raise UsageError(f"{n} processes for {k} MSNAT clients: a process would have no client to train",
                         f"run with at most {k} processes (--nproc {k}), or use a recipe without FI")
    return share(k)


def fuse(clients, weights, into, mine: range) -> None:
    """Fusion injection across ranks: into <- sum_k a_k w_k, each rank adding its own clients, then an
    all-reduce sum; integer buffers (num_batches_tracked) come from client 0, which rank 0 trains."""
    import torch
    import torch.distributed as dist

    from .recovery import msnat

    msnat.fuse([clients[k] for k in mine], [weights[k] for k in mine], into)
    state = into.state_dict()
    keys = [k for k, t in state.items() if t.is_floating_point()]
    quant = [q for q in msnat._act_quantizers(into) if q is not None and q.act_max is not None]
    parts = [state[k] for k in keys] + [q.act_max.reshape(-1).float() for q in quant]
    summed = _all_reduce_flat([t.detach() for t in parts])
    with torch.no_grad():
        for key, v in zip(keys, summed):
            state[key].copy_(v.view_as(state[key]))
        for key, t in state.items():
            if not t.is_floating_point():
                dist.broadcast(t, src=0)
    for q, v in zip(quant, summed[len(keys):]):
        q.act_max = v.view_as(q.act_max).to(q.act_max.dtype)


def gather_clients(items: dict[int, Any], k: int) -> list[Any]:
    """Per-client values from the ranks that own them (stats, accuracies, checkpoint parts) -> a list of k."""
    merged: dict[int, Any] = {}
    for part in all_gather(items):
        merged.update(part)
    return [merged[i] for i in range(k)]


# ---- the --nproc launcher ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {nproc}")
    if nproc > 1 and _env_world() > 1:
        raise UsageError("--nproc inside a torchrun worker", "drop --nproc: torchrun already started the processes")


def configure_cli(nproc: int, timeout: float | None) -> bool:
    """Check --nproc / --dist-timeout and export the timeout for torchrun ranks; True on the rank that prints."""
    check_nproc(nproc)
    if timeout is not None:
        if timeout <= 0:
            raise UsageError(f"--dist-timeout must be a positive number of seconds, got {timeout:g}")
        os.environ[TIMEOUT_ENV] = str(timeout)  # read when a torchrun rank joins the group
    return is_main()


def launch(argv: list[str], nproc: int, *, timeout: float | None = None, env: dict[str, str] | None = None,
           stdout: int | None = None) -> int:
    """Run `python ARGV` as `nproc` ranks on 127.0.0.1 and wait; returns the first non-zero exit code (or 0).

    When a worker fails the others get GRACE_S seconds to stop on their own (they usually fail too, with
    the same message), then they are killed: no run outlives its first failure by more than that.
    """
    check_nproc(nproc)
    port = str(free_port())
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    procs = []
    for r in range(nproc):
        worker_env = {**os.environ, **(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                      "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
                      "GROUP_RANK": "0"}
        worker_env.setdefault("OMP_NUM_THREADS", threads)  # as torchrun: the cores are shared by the ranks
        if timeout is not None:
            worker_env[TIMEOUT_ENV] = str(timeout)
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
    check_nproc(nproc)
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
    if not enabled or not is_main():
        return None

    def bar(iterable=None, **kw):
        from tqdm.auto import tqdm

        return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kw)

    return bar


def _certify_job(kwargs: dict[str, Any], progress) -> dict[str, Any]:
    from .certification import CertifyConfig, certify

    cfg = CertifyConfig.from_dict(kwargs.pop("config"))
    cert = certify(kwargs.pop("package"), config=cfg, progress=progress, **kwargs)
    return {"certificate": dict(cert), "timing": cert.timing, "path": str(cert.path) if cert.path else None}


def _sweep_job(kwargs: dict[str, Any], progress) -> dict[str, Any]:
    from .certification import CertifyConfig, sweep

    cfg = CertifyConfig.from_dict(kwargs.pop("config"))
    return sweep(kwargs.pop("package"), kwargs.pop("param"), kwargs.pop("values"), config=cfg, progress=progress,
                 **kwargs)


def _recover_job(kwargs: dict[str, Any], progress) -> dict[str, Any]:
    from .recovery import recover

    pkg = recover(kwargs.pop("package"), kwargs.pop("recipe"), kwargs.pop("data"), kwargs.pop("output"),
                  progress=progress, **kwargs)
    return {"package": str(pkg.path) if pkg is not None else None}


JOBS = {"certify": _certify_job, "sweep": _sweep_job, "recover": _recover_job}


def _worker(spec_path: str) -> int:
    """One rank of `run_job`: run the job; rank 0 writes result.json, a failing rank error-RANK.json."""
    import torch

    spec_file = Path(spec_path)
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    my_rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        init()
        result = JOBS[spec["job"]](spec["kwargs"], _progress_factory(spec["progress"]))
        if is_main():
            tmp = spec_file.with_name("result.json.tmp")
            tmp.write_text(json.dumps(result, default=str), encoding="utf-8")
            tmp.replace(spec_file.with_name("result.json"))
        return 0
    except Exception as exc:  # noqa: BLE001 - reported to the launching process, which raises it
        if os.environ.get("ANALOGAI_DEBUG"):
            traceback.print_exc()
        report = {**_describe(exc), "time": time.time()}
        report.setdefault("rank", my_rank)
        spec_file.with_name(f"error-{my_rank}.json").write_text(json.dumps(report), encoding="utf-8")
        return int(report.get("exit_code") or 1)
    finally:
        teardown()


if __name__ == "__main__":
    # run the importable module's worker, so its RankFailed is the class the library raises (not __main__'s)
    from analogai_deploy.distributed import _worker as worker

    sys.exit(worker(sys.argv[1]))
