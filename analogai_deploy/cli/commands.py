"""The command groups; each module has `register(app)` and keeps its heavy imports inside commands."""
from __future__ import annotations

import importlib

MODULES = ["convert", "env", "zoo", "export", "certify", "recover"]


def register(app) -> None:
    for name in MODULES:
        importlib.import_module(f"{__package__}.{name}").register(app)
