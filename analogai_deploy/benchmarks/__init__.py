"""The benchmarks behind BENCHMARKS.md, one module per figure.

    from analogai_deploy import benchmarks
    results = benchmarks.ablation(out_dir="runs/bench/ablation")   # train + certify every recipe (ablation.py)
    benchmarks.ablation_markdown(results)                            # the table BENCHMARKS.md shows
    benchmarks.speed()                                               # ratios measured side by side (speed.py)
    benchmarks.agreement()                                           # fast engine vs aihwkit (agreement.py)

`bench/ablation.py`, `bench/speed.py` and `analogai-deploy bench ...` are thin wrappers around these;
common.py holds what the figures share (machine record, medians, BENCHMARKS.md sections).
Every ablation run is cached as JSON next to its package, so an interrupted ablation resumes where it stopped.
"""
from __future__ import annotations

from .ablation import (GPU_ABLATION, AblationConfig, ablation, ablation_main, ablation_markdown, ablation_png,
                       ablation_table, run_ablation)
from .agreement import agreement, agreement_markdown
from .common import describe_machine, machine, median_time, replace_section, update_markdown
from .speed import SpeedConfig, peak_memory, run_speed, speed, speed_main, speed_markdown

__all__ = ["GPU_ABLATION", "AblationConfig", "ablation", "ablation_main", "ablation_markdown", "ablation_png",
           "ablation_table", "run_ablation", "agreement", "agreement_markdown", "describe_machine", "machine",
           "median_time", "replace_section", "update_markdown", "SpeedConfig", "peak_memory", "run_speed", "speed",
           "speed_main", "speed_markdown"]
