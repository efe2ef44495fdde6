"""Recipe ablation on real data: train every recipe on every model and seed, certify on aihwkit PCM.

    OMP_NUM_THREADS=1 nohup .venv/bin/python bench/ablation.py > runs/bench/ablation.log 2>&1 &
    .venv/bin/python bench/ablation.py --rounds 2 --seeds 0 --models lenet      # a quick look
    .venv/bin/python bench/ablation.py --gpu --data cifar10:/data/cifar10 --models resnet18

Writes runs/bench/ablation/ablation.json, bench/ablation.png and the ablation section of
BENCHMARKS.md. Finished runs are cached, so an interrupted run resumes. See BENCHMARKS.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analogai_deploy.benchmarks import ablation_main  # noqa: E402

if __name__ == "__main__":
    ablation_main(sys.argv[1:])
