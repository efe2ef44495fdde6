"""Start-up marks: when ANALOGAI_DEPLOY_MARKS names a file, a command appends one JSON line there as its work
starts and ends (wall clock, this process's CPU time so far), so benchmarks/startup.py can tell start-up
(interpreter, imports, loading) from the work and from what follows it (writing, plots, exit). Under
`python -X importtime` the mark also goes to stderr, where it splits the import lines into before and after.

Standard library only: the mark must not itself import anything that start-up is measured for.
"""
from __future__ import annotations

import json
import os
import sys
import time

ENV = "ANALOGAI_DEPLOY_MARKS"
STDERR_PREFIX = "analogai-deploy mark: "


def mark(event: str) -> None:
    """Record `event` (e.g. "work", "work_done") if the environment asks for marks; otherwise nothing."""
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"event": event, "time": time.time(), "cpu": time.process_time()})
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    if "importtime" in sys._xoptions:
        sys.stderr.write(f"{STDERR_PREFIX}{event}\n")
        sys.stderr.flush()
