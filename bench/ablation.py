"""Recipe ablation on real data: every recipe at two budgets (the same rounds; the same passes), certified on
aihwkit PCM (accuracy vs n_w, drift at 1s / 1d / 1y). See BENCHMARKS.md section 1 and analogai_deploy/benchmarks/ablation.py.

    # LeNet / MLP on 8x8 digits (section 1's small-model tables)
    OMP_NUM_THREADS=1 nohup .venv/bin/python bench/ablation.py > runs/ablation.log 2>&1 &
    # the seed's model: resnet18_cifar at base width 16 on digits at 3x32x32
    .venv/bin/python bench/ablation.py --models resnet18_cifar --width 16 --rounds 6 --repeats 4 \
        --cache bench/results/ablation/resnet18_cifar-w16 --section ablation-resnet --png bench/ablation_resnet18_cifar.png
    .venv/bin/python bench/ablation.py ... --report-only     # tables and PNG from the cached cells, trains nothing

Every finished cell is a JSON file under --cache (committed), so a stopped run resumes where it stopped.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analogai_deploy.benchmarks import ablation_main  # noqa: E402

if __name__ == "__main__":
    ablation_main(sys.argv[1:])
