"""All printing goes through here: data on stdout, diagnostics on stderr.

Modes: human (default), json (one JSON document on stdout, no progress bars), quiet (errors only).
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any


class Output:
    def __init__(self, mode: str = "human"):
        self.mode = mode

    @property
    def json(self) -> bool:
        return self.mode == "json"

    def result(self, data: Any, human: Callable[[Any], str] | str | None = None) -> None:
        """The command's result: JSON on stdout in json mode, else the human rendering."""
        if self.json:
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        elif self.mode != "quiet":
            text = human(data) if callable(human) else (human if human is not None else str(data))
            if text:
                sys.stdout.write(text.rstrip("\n") + "\n")

    def info(self, message: str) -> None:
        if self.mode == "human":
            sys.stderr.write(message + "\n")

    def warn(self, message: str) -> None:
        if self.mode != "quiet":
            sys.stderr.write(f"warning: {message}\n")

    def error(self, message: str, hint: str | None = None) -> None:
        sys.stderr.write(f"error: {message}\n")
        if hint:
            sys.stderr.write(f"hint: {hint}\n")

    def progress(self, iterable: Iterable | None = None, **kwargs):
        """A tqdm bar on stderr in human mode; silent otherwise."""
        from tqdm.auto import tqdm

        return tqdm(iterable, disable=self.mode != "human", file=sys.stderr, dynamic_ncols=True, **kwargs)

    @contextmanager
    def status(self, message: str):
        self.info(message)
        yield


_current = Output()


def out() -> Output:
    return _current


def set_mode(mode: str) -> Output:
    global _current
    _current = Output(mode)
    return _current
