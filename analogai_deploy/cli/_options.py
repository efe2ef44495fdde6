"""Options shared by every command, and the helpers that parse the CLI's small string formats."""
from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from ._output import Output, set_mode

Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout (diagnostics go to stderr).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]


def output(json_: bool, quiet: bool = False) -> Output:
    return set_mode("json" if json_ else "quiet" if quiet else "human")


def parse_shape(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        shape = [int(t) for t in text.replace("x", ",").split(",") if t.strip()]
    except ValueError:
        shape = []
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"bad input shape {text!r}", "write C,H,W, e.g. --input-shape 3,32,32")
    return shape
