"""The command groups; each module has `register(app)` and keeps its heavy imports inside commands."""
from __future__ import annotations

import importlib

# In pipeline order: this is the order `--help` lists them.
MODULES = ["convert", "recover", "export", "certify", "zoo", "env", "bench"]


def register(app) -> None:
    for name in MODULES:
        importlib.import_module(f"{__package__}.{name}").register(app)
    _keep_examples_verbatim(app)


def _keep_examples_verbatim(app) -> None:
    """Mark every help's trailing 'Examples:' block with click's no-rewrap marker (\\b), one example per line."""
    for info in app.registered_commands:
        info.help = _examples_block(info.help)
    for group in app.registered_groups:
        group.help = _examples_block(group.help)
        _keep_examples_verbatim(group.typer_instance)
        group.typer_instance.info.help = _examples_block(group.typer_instance.info.help)


def _examples_block(text):
    if not isinstance(text, str) or "\b" in text:
        return text
    for label in ("Examples:", "Example:"):
        head, found, body = text.partition(label)
        if found:
            lines = [line for line in body.splitlines() if line.strip()]
            return head.rstrip() + "\n\n\b\n" + label + "\n" + "\n".join(lines) + "\n"
    return text
