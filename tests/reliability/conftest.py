"""Fixtures of the reliability harnesses (harness.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from harness import RECOVER_OVERRIDES, Runner


@pytest.fixture(scope="session")
def recover_reference(lenet_pkg, tmp_path_factory) -> tuple[Path, float]:
    """The uninterrupted `recover ... RECOVER_OVERRIDES` that every interrupted run must end equal to, and its
    wall seconds (the trials draw their kill moments as fractions of it). Read-only."""
    tmp = tmp_path_factory.mktemp("reliability-ref")
    run = Runner(tmp / "logs")
    code, seconds = run.timed(["recover", lenet_pkg, "-o", tmp / "ref", "-q", *RECOVER_OVERRIDES])
    assert code == 0, run.last_log.read_text()[-2000:]
    return tmp / "ref", seconds
