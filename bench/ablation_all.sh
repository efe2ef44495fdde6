#!/bin/sh
# Every ablation study in BENCHMARKS.md section 1, in order: the seed's model (resnet18_cifar at base width 16,
# both budgets, seeds 0-2), the LeNet / MLP re-run under today's default mapping, one full-width resnet18_cifar
# point. Resumable: finished cells are cached under bench/results/ablation/; rerun this script to go on.
# Run from the repository root:  OMP_NUM_THREADS=1 nohup sh bench/ablation_all.sh > runs/ablation.log 2>&1 &
PY=${PYTHON:-.venv/bin/python}
$PY bench/ablation.py --models resnet18_cifar --width 16 --rounds 6 --repeats 4 --seeds 0,1,2 \
  --out runs/bench/ablation/resnet18_cifar-w16 --cache bench/results/ablation/resnet18_cifar-w16 \
  --section ablation-resnet --png bench/ablation_resnet18_cifar.png
$PY bench/ablation.py --models lenet,mlp --rounds 20 --repeats 10 --seeds 0,1,2 \
  --out runs/bench/ablation/digits-small --cache bench/results/ablation/digits-small \
  --section ablation --png bench/ablation.png
$PY bench/ablation.py --models resnet18_cifar --width 64 --recipes vanilla,msnat --rounds 6 --repeats 4 --seeds 0 \
  --out runs/bench/ablation/resnet18_cifar-w64 --cache bench/results/ablation/resnet18_cifar-w64 \
  --section ablation-resnet-w64 --png bench/ablation_resnet18_cifar_w64.png
