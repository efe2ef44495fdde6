"""(e) Start-up, measured in fresh processes (see BENCHMARKS.md, start-up, and analogai_deploy/benchmarks/startup.py):
before the work starts (interpreter, imports, loading), the work, and what follows it, in wall and CPU time.

    .venv/bin/python bench/startup.py                                   # writes the startup section of BENCHMARKS.md
    git worktree add /tmp/before <commit> && .venv/bin/python bench/startup.py --against /tmp/before --n 7
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analogai_deploy.benchmarks.startup import startup_main  # noqa: E402

if __name__ == "__main__":
    startup_main(sys.argv[1:])
