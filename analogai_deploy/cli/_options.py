"""Options shared by every command, and the helpers that parse the CLI's small string formats."""
from __future__ import annotations

from typing import Annotated

import typer

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

