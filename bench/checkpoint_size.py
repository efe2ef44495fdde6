"""The size of one recover checkpoint for torchvision ResNet-18 (3x32x32, msnat recipe: K = 5 clients, Adam).

One round on 64 digits samples (the size does not depend on the count), stopped after round 1; prints the
files of OUTPUT.partial/ in MB. Extra arguments are recipe overrides, e.g. recovery.fusion.momentum_broadcast=true.

    OMP_NUM_THREADS=1 .venv/bin/python bench/checkpoint_size.py
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

import analogai_deploy as ad  # noqa: E402
from analogai_deploy import data as D  # noqa: E402
from analogai_deploy.recovery import Interrupted  # noqa: E402


def main(overrides: list[str]) -> dict[str, float]:
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="analogai-ckpt-")
    try:
        ad.convert("resnet18", output=f"{tmp}/r", num_classes=10, input_shape=[3, 32, 32])
        ds = D.load("digits", input_shape=[3, 32, 32])
        for split in ("train", "val"):
            x, y = getattr(ds, split).tensors
            setattr(ds, split, TensorDataset(x[:64], y[:64]))

        def stop(entry):
            raise KeyboardInterrupt

        try:
            ad.recover(f"{tmp}/r", "msnat", ds, output=f"{tmp}/out", on_round=stop,
                       overrides=["training.rounds=3", "training.cpu_threads=1", *overrides])
        except Interrupted:
            pass
        d = Path(f"{tmp}/out.partial")
        return {f.name: round(os.path.getsize(f) / 2**20, 1) for f in sorted(d.iterdir())}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a ResNet-18 checkpoint and its packages: hundreds of MB


if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    print(main(sys.argv[1:]))
