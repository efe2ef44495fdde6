"""Accuracy under weight noise of every shipped recipe, LeNet on digits (the numbers in docs/recover.md).

    .venv/bin/python bench/recover_recipes.py                      # all recipes, seeds 0 1 2
    .venv/bin/python bench/recover_recipes.py --recipes vanilla msnat --seeds 0

Each run: convert lenet (seed 0), `recover` with the shipped recipe (training.seed = s), then test
accuracy at sigma = 0, 0.1, 0.2, 0.3, mean over 10 noise draws (fixed draw seed), on the test split
that training never sees. Prints one row per run and a mean table in markdown.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import analogai_deploy as ad
from analogai_deploy import data, package
from analogai_deploy.recovery import recipe as recipes
from analogai_deploy.recovery.batches import Batches
from analogai_deploy.recovery.validation import evaluate

SIGMAS = (0.0, 0.1, 0.2, 0.3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=sorted(recipes.shipped()))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("overrides", nargs="*", help="extra recipe overrides for every run")
    args = ap.parse_args()

    ds = data.load("digits", input_shape=[1, 8, 8])
    test = Batches(ds.test, 512, torch.device("cpu"))
    rows: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "lenet"
        ad.convert("lenet", output=src, num_classes=10)
        for name in args.recipes:
            for seed in args.seeds:
                start = time.perf_counter()
                out = Path(tmp) / f"{name}-{seed}"
                ad.recover(src, name, ds, output=out, overrides=[f"training.seed={seed}", *args.overrides])
                wall = time.perf_counter() - start
                model = package.load(out).model
                row = {f"{s}": evaluate(model, test, s, draws=args.draws, seed=999)["acc"] for s in SIGMAS}
                row["wall_s"] = wall
                rows.setdefault(name, []).append(row)
                print(name, seed, {k: round(v, 4) for k, v in row.items()}, flush=True)
    print("\n| recipe | " + " | ".join(f"sigma={s}" for s in SIGMAS) + " | wall (s) |")
    print("|---" * (len(SIGMAS) + 2) + "|")
    for name, rs in rows.items():
        mean = {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]}
        print(f"| {name} | " + " | ".join(f"{100 * mean[str(s)]:.1f}" for s in SIGMAS) + f" | {mean['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
