"""The `analogai-deploy` command line, assembled from one module per command group.

Heavy imports (torch, aihwkit, onnx) happen inside commands so `--help` stays fast.
"""
from __future__ import annotations

import sys

import typer

from . import commands

app = typer.Typer(
    name="analogai-deploy",
    help="Make neural networks survive analog in-memory-computing hardware: "
    "convert -> recover -> export -> certify -> publish.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
commands.register(app)


def _version(value: bool) -> None:
    if value:
        from ..provenance import TOOLKIT, version_of

        # package metadata only (no torch import), so this stays as fast as --help
        deps = ", ".join(f"{d} {version_of(d) or 'not installed'}" for d in ("torch", "aihwkit"))
        typer.echo(f"{TOOLKIT} {version_of(TOOLKIT) or 'unknown'} ({deps})")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version (and torch's and aihwkit's) and exit.")) -> None:
    """Make neural networks survive analog in-memory-computing hardware: convert -> recover -> export -> certify -> publish."""


def main(argv: list[str] | None = None) -> int:
    from .error_messages import handle

    try:
        rc = app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return handle(KeyboardInterrupt())
    except typer.TyperException as exc:  # the command line itself was wrong (bad option, missing argument)
        exc.show() if hasattr(exc, "show") else print(exc.format_message(), file=sys.stderr)
        return 2
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # every other failure goes through the one error mapper
        return handle(exc)
    if rc == 130:  # typer turns a bare Ctrl-C (before a command catches it) into a silent return of 130
        return handle(KeyboardInterrupt())
    return rc if isinstance(rc, int) else 0


def run() -> None:
    """The console entry point (and `python -m analogai_deploy`)."""
    import gc

    code = main()
    # Exiting, the interpreter's last collections walk every object torch and the rest created (~0.5 s of
    # CPU after a LeNet certify, BENCHMARKS.md start-up); frozen objects are skipped there, and the process's
    # memory goes back anyway. The command has closed its files; atexit handlers still run.
    gc.freeze()
    sys.exit(code)
