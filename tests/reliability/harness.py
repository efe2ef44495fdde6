"""Kill-and-resume harness: run a CLI command in a real child process, SIGKILL it at seeded random
moments, check what is on disk after every kill, then let it finish and compare with an uninterrupted run.

Children are forked from a forkserver that has already imported torch and the toolkit, so a trial costs
the work of the command, not ~5 s of imports; each child is still a separate process killed with SIGKILL
(no handler, no cleanup, exactly what an OOM killer or a pulled plug does to the process).

    stats = Stats("recover")
    run = Runner(tmp_path / "logs")
    code = run.to_end(["recover", pkg, "-o", out, ...])
    killed = run.kill_at(argv, after=1.3)          # True when the kill landed before the command ended
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: imported once in the forkserver; every child starts with them loaded
PRELOAD = ["torch", "torch._dynamo", "torch.optim", "safetensors.torch", "onnx", "onnxruntime", "sklearn.datasets",
           "analogai_deploy.cli.app",
           "analogai_deploy.package", "analogai_deploy.recovery", "analogai_deploy.recovery.trainers",
           "analogai_deploy.exporter", "analogai_deploy.zoo", "analogai_deploy.data", "analogai_deploy.sources"]

#: msnat (FI over 2 noise levels + feedback loops) on LeNet/digits, sized so one run takes seconds
RECOVER_OVERRIDES = ["training.rounds=3", "training.batch_size=256", "training.eval_draws=1",
                     "recovery.noise_2=null", "recovery.noise_3=null", "recovery.noise_4=null"]

_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


@dataclass(frozen=True)
class CrashPoint:
    """SIGKILL the child itself when it calls `target` ("module:attr"), before or after the call.

    `match`: only calls whose first argument contains this text count (e.g. the temp folder's rename).
    """

    name: str
    target: str
    when: str = "before"
    match: str = ""


def _arm(crash: CrashPoint) -> None:
    import importlib

    module, attr = crash.target.split(":")
    owner = importlib.import_module(module)
    original = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        hit = not crash.match or (args and crash.match in str(args[0]))
        if hit and crash.when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if hit and crash.when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, attr, wrapper)


def _child(argv: list[str], log: str, crash: CrashPoint | None = None) -> None:
    """Runs in the child: the CLI's own main(), output to a log file, its exit code as the process's."""
    if crash is not None:
        _arm(crash)
    fh = open(log, "a", buffering=1)
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    sys.stdout = sys.stderr = fh
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from analogai_deploy.cli.app import main

    code = main([str(a) for a in argv])
    fh.flush()
    os._exit(code)


@dataclass
class Stats:
    """The figures a harness prints: what was tried and what went wrong."""

    what: str
    trials: int = 0
    kills: int = 0  # SIGKILLs that landed while the command was still running
    kills_after_checkpoint: int = 0  # ... of which with a round checkpoint on disk (a real resume follows)
    resumes: int = 0  # reruns after a kill
    finished_before_kill: int = 0  # the command ended before its kill moment
    checks: int = 0  # on-disk state checks after a kill
    half_written: int = 0  # a package folder that is neither the old one nor a complete new one
    mismatches: int = 0  # final result differs from the uninterrupted run
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        d = asdict(self)
        d.pop("failures")
        return "reliability " + " ".join(f"{k}={v}" for k, v in d.items())

    def ok(self) -> bool:
        return not (self.half_written or self.mismatches or self.failures)


class Runner:
    """Starts CLI commands as forked children; kills them with SIGKILL on request."""

    def __init__(self, logs: Path):
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.n = 0

    def _start(self, argv: list[str], crash: CrashPoint | None = None):
        self.n += 1
        log = self.logs / f"run-{self.n:03d}.log"
        p = _context().Process(target=_child, args=([str(a) for a in argv], str(log), crash))
        p.start()
        return p, log

    def start(self, argv: list[str]):
        """Start argv and return at once: (the child process, its log file)."""
        return self._start(argv)

    def to_end(self, argv: list[str], timeout: float = 600) -> int:
        p, log = self._start(argv)
        p.join(timeout)
        if p.exitcode is None:
            p.kill()
            p.join()
            raise AssertionError(f"{argv[0]} did not finish in {timeout} s; log {log}")
        self.last_log = log
        return p.exitcode

    def kill_at(self, argv: list[str], after: float) -> bool:
        """Start argv, SIGKILL it `after` seconds later; True when it was still running (a real kill)."""
        p, log = self._start(argv)
        p.join(after)
        self.last_log = log
        if p.exitcode is not None:
            return False
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        return p.exitcode == -signal.SIGKILL  # else it ended on its own in the instant before the kill

    def warm(self) -> None:
        """Start the forkserver (it imports PRELOAD once) so later timings measure the command only."""
        assert self.to_end(["--help"]) == 0

    def crash_at(self, argv: list[str], crash: CrashPoint, timeout: float = 600) -> bool:
        """Run argv until it reaches `crash` and kills itself; True when it died there."""
        p, log = self._start(argv, crash)
        p.join(timeout)
        self.last_log = log
        if p.exitcode is None:
            p.kill()
            p.join()
        return p.exitcode == -signal.SIGKILL

    def timed(self, argv: list[str]) -> tuple[int, float]:
        self.warm()
        t0 = time.perf_counter()
        code = self.to_end(argv)
        return code, time.perf_counter() - t0


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tensors_equal(a: Path, b: Path) -> bool:
    """Bitwise: same tensor names, dtypes, shapes and bytes."""
    import torch
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    if ta.keys() != tb.keys():
        return False

    def raw(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous().view(-1).view(torch.uint8)

    return all(ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape and raw(ta[k]).equal(raw(tb[k])) for k in ta)


def package_state(path: Path) -> str:
    """'absent', or 'complete' when the folder reads, verifies and loads; raises AssertionError otherwise.

    read_config first restores a swap that a kill interrupted (the old folder parked as .NAME.old-*).
    """
    from analogai_deploy import package as pkgio
    from analogai_deploy.errors import AnalogAIError

    parked = list(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
    if not path.exists() and not parked:
        return "absent"
    try:
        pkgio.load(path)
    except AnalogAIError as exc:
        raise AssertionError(f"{path} is half-written: {exc}") from None
    return "complete"
