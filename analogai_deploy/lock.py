"""One writer per output: an advisory lock beside OUTPUT that covers OUTPUT and OUTPUT.partial/.

    with lock.held(Path("runs/x"), log=print):   # a second run on runs/x now refuses at once (exit 2)
        ...

The lock is `fcntl.flock` on `.NAME.lock` beside the output, a file that holds the pid, host and start
time of the run holding it. The kernel drops a flock when its process dies, so a killed run never blocks
the next one: its file stays behind, and the next run reports it as stale (which pid, since when) and takes
over. A run that ends normally removes the file. Locks are per process and re-entrant: `package.write`
takes the lock its caller (e.g. `recover`) already holds.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import UsageError

#: lock files this process holds: path -> [open fd, depth]
_HELD: dict[str, list[int]] = {}


def lock_path(output: str | Path) -> Path:
    """`.NAME.lock` beside OUTPUT (absolute, so `runs/x` and `./runs/x` are the same lock)."""
    output = Path(os.path.abspath(os.path.expanduser(output)))
    return output.parent / f".{output.name}.lock"


def _holder(fd: int) -> dict[str, Any]:
    """What a lock file says about its holder ({} for an empty or unreadable one)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _since(holder: dict[str, Any]) -> str:
    started = holder.get("started")
    if not isinstance(started, (int, float)):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) + f" ({_ago(time.time() - started)} ago)"


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _who(holder: dict[str, Any]) -> str:
    pid = holder.get("pid", "?")
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"pid {pid}{where}, started {_since(holder)}"


def _run_id() -> str | None:
    """The distributed run this process is a rank of (torchrun / --nproc set these), else None."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return None
    return f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"


def busy(output: str | Path, flag: str = "-o") -> UsageError | None:
    """The refusal for an output another run is writing now, or None (free, held by this process, or by
    rank 0 of this same distributed run). Takes nothing: a probe for checks made before the slow work."""
    path = lock_path(output)
    if str(path) in _HELD:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file: nobody holds it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        holder = _holder(fd)
        return None if holder.get("run") is not None and holder.get("run") == _run_id() else \
            _refusal(output, holder, flag)
    finally:
        os.close(fd)
    return None


def _refusal(output: str | Path, holder: dict[str, Any], flag: str) -> UsageError:
    return UsageError(f"{output} is being written by another run ({_who(holder)}); it holds {lock_path(output)}",
                      f"wait for that run to finish (its checkpoint stays yours to resume then), "
                      f"or write elsewhere ({flag} NEW_FOLDER)")


@contextlib.contextmanager
def held(output: str | Path, *, flag: str = "-o", log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the lock on `output` (and its .partial/) for the block; refuse at once (UsageError, exit 2,
    naming the holder) when another live run holds it. `log` hears about a stale lock taken over."""
    path = lock_path(output)
    key = str(path)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    created = [p for p in path.parents if not p.exists()]  # made for the lock file, removed again if left empty
    fd = _acquire(path, output, flag, log)
    if fd is None:  # a folder we cannot write to: nothing of ours can be written there, and the caller's
        yield       # own check (package.check_output) says so with its fix
        return
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(path)  # still locked: a run that opened it now finds it unlinked and opens a new one
        os.close(fd)
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()


_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.EISDIR)


def _acquire(path: Path, output: str | Path, flag: str, log: Callable[[str], None] | None) -> int | None:
    """The locked fd, or None where the folder cannot be written at all."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in _NOT_WRITABLE:
            return None
        raise
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno in _NOT_WRITABLE:
                return None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise _refusal(output, holder, flag) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the run that held it finished and removed it between our open and flock: again
            os.close(fd)
            continue
        stale = _holder(fd)
        if stale and log is not None:
            log(f"note: {path} was left by a run that ended without releasing it ({_who(stale)}; that process "
                "no longer holds it, e.g. it was killed): taking it over")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                 "run": _run_id()}).encode())
        return fd
