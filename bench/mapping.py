"""Mapping options on the unmodified MiniLM and on LeNet: each option alone, and the defaults.

    OMP_NUM_THREADS=1 nohup .venv/bin/python bench/mapping.py > runs/bench/mapping.log 2>&1 &
    .venv/bin/python bench/mapping.py --quick --models minilm --engines aihwkit --minilm-repeats 2 --markdown ''

Writes the mapping section of BENCHMARKS.md; every certificate is cached under runs/bench/mapping/,
so an interrupted run resumes. See analogai_deploy/benchmarks/mapping.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analogai_deploy.benchmarks.mapping import mapping_main  # noqa: E402

if __name__ == "__main__":
    mapping_main(sys.argv[1:])
