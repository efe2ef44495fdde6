"""Every error a user can cause or meet, each with a one-line fix.

The CLI maps these to exit codes: a `UsageError` (bad input, exit 2) or an
`OperationFailed` (the operation ran and failed, exit 1).
A message names a parameter in backticks, as the Python API spells it (`ci_width`, `repeats=auto`);
the CLI shows the flag instead (--ci-width, --repeats auto; cli/error_messages.py), so neither speaks the other's
language. A backticked single name (or name=value) in a message is always a parameter.
"""
from __future__ import annotations

import difflib
import errno
import re
from collections.abc import Iterable
from pathlib import Path


class AnalogAIError(Exception):
    """Base class. `hint` says how to fix it; `exit_code` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(AnalogAIError):
    """The user asked for something that cannot work: unknown name, bad key, missing path."""

    exit_code = 2


class OperationFailed(AnalogAIError):
    """The request was valid but the operation failed (a gate, a mismatch, a divergence)."""

    exit_code = 1


class PackageError(OperationFailed):
    """A package is missing, corrupt, or has been tampered with."""


def closest(word: str, choices: Iterable[str]) -> str:
    """'did you mean ...' text for `word`, or '' when nothing is close."""
    matches = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"did you mean: {', '.join(matches)}?" if matches else ""


def unknown(kind: str, word: str, choices: Iterable[str]) -> UsageError:
    """An UsageError for an unknown name that suggests close ones, else lists the valid ones."""
    choices = sorted(choices)
    hint = closest(word, choices) or (
        "valid: " + ", ".join(choices) if len(choices) <= 30 else f"{len(choices)} valid names; see --help"
    )
    return UsageError(f"unknown {kind} {word!r}", hint)


#: write failures that mean "no room": the disk, a quota, or a file size limit (RLIMIT_FSIZE, the file system's)
NO_ROOM = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
           errno.EFBIG: "a file grew past the size limit"}


def no_room(exc: BaseException, where: str | Path, kept: str,
            fix: str = "free space there (or write elsewhere with -o) and rerun") -> OperationFailed | None:
    """A write that failed for lack of space as one error naming where (and what was kept); None otherwise.

    safetensors (Rust) raises its own error type and gives the OS error only as text: "... (os error 28)".
    """
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None and (m := re.search(r"\(os error (\d+)\)", str(exc))):
        code = int(m.group(1))
    if code not in NO_ROOM:
        return None
    return OperationFailed(f"{NO_ROOM[code]}: could not write {where}; {kept}", fix)
