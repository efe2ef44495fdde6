"""Options shared by every command, and the helpers that parse the CLI's small string formats."""
from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from ._output import Output, set_mode

Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout (diagnostics go to stderr).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
DistTimeout = Annotated[float | None, typer.Option(help="Seconds a process waits for the others before the run fails "
                                                        "(with --nproc or torchrun). [default: 1800]")]


def output(json_: bool, quiet: bool = False) -> Output:
    return set_mode("json" if json_ else "quiet" if quiet else "human")


def rank_output(nproc: int, dist_timeout: float | None, json_: bool, quiet: bool) -> Output:
    """The output of a command that may run on several ranks (--nproc, torchrun): only rank 0 prints."""
    from .. import distributed

    main = distributed.configure_cli(nproc, dist_timeout)
    return output(json_ and main, quiet or not main)


def parse_shape(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        shape = [int(t) for t in text.replace("x", ",").split(",") if t.strip()]
    except ValueError:
        shape = []
    if len(shape) != 3 or min(shape) < 1:
        got = f"{len(shape)} number{'s' if len(shape) != 1 else ''}" if shape and min(shape) >= 1 else repr(text)
        raise UsageError(f"--input-shape is an image's C,H,W (3 numbers >= 1), got {got}",
                         "write e.g. --input-shape 3,32,32; a model that takes token ids is converted from a "
                         "Hugging Face folder (hf:FOLDER, with its tokenizer)")
    return shape
