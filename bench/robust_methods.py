"""Accuracy under weight noise of MSNAT alone and combined with SAM, PGD and 8-bit QAT (digits, LeNet).

Each variant recovers the same converted LeNet with the `msnat` recipe (same rounds, seed and data),
then the recovered package is loaded back (QAT quantizers restored from config.json) and evaluated on
the digits test split at weight-noise level sigma, averaged over several noise draws.

    .venv/bin/python bench/robust_methods.py --rounds 4 --sigma 0.3 --draws 10
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "msnat": {},
    "msnat + SAM": {"recovery.optimizer.sam": True},
    "msnat + PGD": {"recovery.adversarial.PGD.use": True},
    "msnat + 8-bit QAT": {"recovery.qat": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sigma", type=float, default=0.3)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--pgd-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args()

    import torch

    import analogai_deploy as ad
    from analogai_deploy import package
    from analogai_deploy.data import load as load_data
    from analogai_deploy.recovery.batches import Batches
    from analogai_deploy.recovery.validation import evaluate

    torch.set_num_threads(args.threads)
    data = load_data("digits", input_shape=[1, 8, 8])
    test = Batches(data.test, 512, torch.device("cpu"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "lenet"
        ad.convert("lenet", output=base, num_classes=10)
        for name, switches in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            overrides = {"training.rounds": args.rounds, "training.seed": args.seed,
                         "training.cpu_threads": args.threads, "recovery.adversarial.PGD.steps": args.pgd_steps,
                         **switches}
            start = time.perf_counter()
            out = ad.recover(base, "msnat", data, output=Path(tmp) / name.replace(" ", "").replace("+", "_"),
                             overrides=overrides)
            seconds = time.perf_counter() - start
            model = package.load(out.path).model  # what a user gets back, QAT restored from config.json
            noisy = evaluate(model, test, args.sigma, args.draws)
            clean = evaluate(model, test, 0.0)
            rows.append({"variant": name, "test_acc_noisy": noisy["acc"], "test_acc_clean": clean["acc"],
                         "train_seconds": round(seconds, 1)})
            print(f"{name:20s} acc@sigma={args.sigma}: {noisy['acc']:.4f}  clean: {clean['acc']:.4f}  "
                  f"({seconds:.0f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
