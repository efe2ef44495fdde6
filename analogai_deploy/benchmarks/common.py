"""What every benchmark figure shares: the machine record, medians, the BENCHMARKS.md sections."""
from __future__ import annotations

import atexit
import math
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """A description of this machine for the benchmark record."""
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version()}


def replace_section(text: str, name: str, body: str) -> str:
    """Replace the text between <!-- NAME:start --> and <!-- NAME:end --> (append the block if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        return text[:text.index(start)] + block + text[text.index(end) + len(end):]
    return text.rstrip() + "\n\n" + block + "\n"


def update_markdown(path: str | Path, name: str, body: str) -> None:
    p = Path(path)
    text = p.read_text(encoding="utf-8") if p.is_file() else "# Benchmarks\n"
    p.write_text(replace_section(text, name, body), encoding="utf-8")


def scratch_dir(prefix: str) -> Path:
    """A temporary folder removed when the process ends: a benchmark's packages (a ResNet's take about
    0.5 GB, a SmolLM2's 1 GB) must not pile up in the shared /tmp run after run."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return tmp


def median_time(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def isfinite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def describe_machine(m: dict[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return f"{m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch thread(s){gpu}, torch {m['torch']}"



def bench_models() -> str:
    """bench/models.py (the small ResNet-8 and friends) as a source spec prefix."""
    return str(Path(__file__).resolve().parents[2] / "bench" / "models.py")
