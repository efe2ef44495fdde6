"""Where the shipped recipes and model zoo are: inside the installed package (a wheel carries them under
analogai_deploy/_shipped/, see setup.py), else at the root of the source tree (an editable install)."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """The folder of shipped `recipes` or `model_zoo`."""
    inside = _HERE / "_shipped" / name
    return inside if inside.is_dir() else _HERE.parent / name
