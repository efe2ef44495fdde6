"""Speed, every figure a ratio measured side by side in one run (see BENCHMARKS.md):

  (a) one MSNAT round vs the compute the method needs (K clients x 4 forward passes) and vs a digital epoch
  (b) our noise-injected training step vs a plain digital step and vs aihwkit's HWA step (torch / C++ tiles)
  (c) one certify repeat at one time point (fast engine, aihwkit torch / C++ tiles) vs one digital pass
  (d) the peak memory of each, one fresh process per workload

    OMP_NUM_THREADS=1 .venv/bin/python bench/speed.py            # CPU, writes the speed section of BENCHMARKS.md
    .venv/bin/python bench/speed.py --gpu --threads 8            # GPU mode (ResNet-18, batch 512; untested here)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analogai_deploy.benchmarks import speed_main  # noqa: E402

if __name__ == "__main__":
    speed_main(sys.argv[1:])
