"""The benchmarks behind BENCHMARKS.md: per figure or study its config, its runs and its tables.

    from analogai_deploy import benchmarks
    results = benchmarks.ablation(cache="bench/results/ablation/x")  # train + certify every recipe (ablation.py)
    benchmarks.ablation_markdown(results)                            # the tables BENCHMARKS.md shows
    benchmarks.speed()                                               # ratios measured side by side (speed.py)
    benchmarks.agreement()                                           # fast engine vs aihwkit (agreement.py)

The ablation is three modules: ablation_plan.py (config, cells, budgets), ablation.py (train, certify, cache),
ablation_tables.py (tables, verdict, PNG); the speed table four: speed_config.py (models, config),
speed_workloads.py (what is timed), speed.py (timed side by side), speed_tables.py (the table).
`bench/ablation.py`, `bench/speed.py` and `analogai-deploy bench ...` are thin wrappers around these;
common.py holds what the figures share (machine record, medians, BENCHMARKS.md sections).
Every finished ablation cell is cached as a small JSON file (bench/results/ablation/), so an interrupted ablation
resumes where it stopped and `bench/ablation.py --report-only` rebuilds its tables from the cache alone.
"""
from __future__ import annotations

from .ablation import ablation, ablation_main, ablation_report, run_ablation
from .ablation_plan import GPU_ABLATION, AblationConfig
from .ablation_tables import ablation_markdown, ablation_png, ablation_table, write_report
from .agreement import agreement, agreement_markdown
from .common import describe_machine, machine, median_time, replace_section, update_markdown
from .speed import peak_memory, run_speed, speed, speed_main
from .speed_config import SpeedConfig
from .speed_tables import speed_markdown

__all__ = ["GPU_ABLATION", "AblationConfig", "ablation", "ablation_main", "ablation_markdown", "ablation_png",
           "ablation_report", "ablation_table", "run_ablation", "write_report", "agreement", "agreement_markdown",
           "describe_machine", "machine", "median_time", "replace_section", "update_markdown", "SpeedConfig",
           "peak_memory", "run_speed", "speed", "speed_main", "speed_markdown"]
