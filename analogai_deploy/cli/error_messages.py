"""Exceptions -> one-line messages with the fix, and exit codes (0 ok, 1 failed, 2 usage).

ANALOGAI_DEBUG=1 shows the full traceback instead.
"""
from __future__ import annotations

import errno
import os
import re
import traceback

from ..errors import AnalogAIError, no_room
from ._output import out


_OS_HINTS = {
    errno.ENOSPC: "free disk space or write elsewhere (-o); a package being replaced is left as it was",
    errno.EDQUOT: "free space within your disk quota or write elsewhere (-o)",
    errno.EFBIG: "a file grew past the size limit (ulimit -f, or the file system's): raise it or write elsewhere (-o)",
    errno.EACCES: "choose a folder you can write to, or fix its permissions",
    errno.EPERM: "choose a folder you can write to, or fix its permissions",
    errno.EROFS: "the file system is read-only: write elsewhere (-o)",
}


#: library parameters whose flag is not the parameter's name with dashes
FLAGS = {"exclude_types": "--exclude-type", "hub_repo": "--hub", "output": "-o"}
_PARAM = re.compile(r"`([a-z][a-z0-9_]*)(?:=([^`\s]+))?`")


def flags(text: str | None) -> str | None:
    """A library message in the CLI's words: `ci_width` -> --ci-width, `repeats=auto` -> --repeats auto
    (errors.py: the library names parameters, the CLI names flags)."""
    def flag(m: re.Match) -> str:
        name = FLAGS.get(m.group(1), "--" + m.group(1).replace("_", "-"))
        return name if m.group(2) in (None, "True") else f"{name} {m.group(2)}"

    return _PARAM.sub(flag, text) if text else text


def handle(exc: BaseException) -> int:
    if os.environ.get("ANALOGAI_DEBUG"):
        traceback.print_exception(exc)
    if isinstance(exc, AnalogAIError):
        out().error(flags(exc.message), flags(exc.hint))
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        out().error("interrupted")
        return 130
    if isinstance(exc, OSError) and exc.errno in _OS_HINTS:  # the machine, not the toolkit: say which file
        where = f": {exc.filename}" if exc.filename else ""
        out().error(f"{exc.strerror or os.strerror(exc.errno)}{where}", _OS_HINTS[exc.errno])
        return 1
    if (full := no_room(exc, "a file", "rerun with ANALOGAI_DEBUG=1 to see which")) is not None:
        out().error(full.message, full.hint)  # a write no stage named (safetensors gives its OS error as text)
        return 1
    if isinstance(exc, MemoryError):
        out().error("out of memory", "lower the batch size (training.batch_size=...) or the model size")
        return 1
    out().error(f"{type(exc).__name__}: {exc}", "this is a bug; rerun with ANALOGAI_DEBUG=1 and report the traceback")
    return 1
