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

Layers: this module knows no stage. The stages (certification, recovery) call its helpers; what is
specific to one stage lives with it (recovery/parallel.py: data parallel, MSNAT clients over ranks,
fusion as an all-reduce); the launcher that runs a stage on N local ranks (`--nproc`) sits above the
stages in launcher.py.
"""
from __future__ import annotations

import atexit
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from .errors import AnalogAIError, OperationFailed, UsageError

TIMEOUT_ENV = "ANALOGAI_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0  # a rank may wait this long for a slower one (e.g. 3 vs 2 MSNAT clients per round)


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
                         "launch with torchrun or `nproc=N`, which set them")
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


def error_report(exc: BaseException) -> dict[str, Any]:
    """What a failed rank tells the others (and the launcher): its rank, message, hint and exit code."""
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
    reports = all_gather(None if error is None else error_report(error))
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


def all_reduce_flat(tensors, scale: float = 1.0):
    """Sum (times `scale`) of each tensor over all ranks, in one collective; returns new tensors."""
    import torch
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    if scale != 1.0:
        flat.mul_(scale)
    return list(flat.split([t.numel() for t in tensors]))


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise UsageError(f"`nproc` must be >= 1, got {nproc}")
    if nproc > 1 and _env_world() > 1:
        raise UsageError("`nproc` inside a torchrun worker", "drop `nproc`: torchrun already started the processes")


def configure_cli(nproc: int, timeout: float | None) -> bool:
    """Check --nproc / --dist-timeout and export the timeout for torchrun ranks; True on the rank that prints."""
    check_nproc(nproc)
    if timeout is not None:
        if timeout <= 0:
            raise UsageError(f"`dist_timeout` must be a positive number of seconds, got {timeout:g}")
        os.environ[TIMEOUT_ENV] = str(timeout)  # read when a torchrun rank joins the group
    return is_main()
