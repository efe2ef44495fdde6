"""Rebuild the shipped zoo entry `digits-cnn-msnat-pcm` from scratch, with the real pipeline.

    .venv/bin/python scripts/build_zoo.py                 # writes model_zoo/digits-cnn-msnat-pcm + index.json
    .venv/bin/python scripts/build_zoo.py --zoo /tmp/zoo --repeats 4
    .venv/bin/python scripts/build_zoo.py --recertify     # same weights, a new certificate, republished

convert lenet (8x8 digits, seed 0) -> recover with the shipped `msnat` recipe on the bundled digits
-> export (safetensors + ONNX, checked with onnxruntime) -> certify on aihwkit PCM at 1 s, 1 h,
1 d, 1 y with a gate -> publish (the zoo's gate checks the certificate and the sha256 again).
Every step is the public Python API; the package records the recipe hash, seeds and versions.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

NAME = "digits-cnn-msnat-pcm"
ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", default=str(ROOT / "model_zoo"), help="zoo folder to publish into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=10, help="Monte Carlo repeats of the certificate")
    parser.add_argument("--max-drop", type=float, default=1.0,
                        help="gate: lower 95%% CI bound at --at at most this many points below digital")
    parser.add_argument("--at", default="1d", help="time the gate is judged at")
    parser.add_argument("--override", action="append", default=[], help="recipe override, e.g. training.rounds=10")
    parser.add_argument("--recertify", action="store_true",
                        help="keep the entry's weights: certify it again with the settings above and republish it "
                             "(when certificates gain fields, or certify changes how it measures)")
    args = parser.parse_args(argv)

    import torch
    from tqdm.auto import tqdm

    import analogai_deploy as ad
    from analogai_deploy import zoo

    torch.manual_seed(args.seed)
    bar = lambda **kw: tqdm(file=sys.stderr, mininterval=10, **kw)  # noqa: E731  (progress on stderr)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="build-zoo-") as tmp:
        if args.recertify:  # the same weights, a new certificate (seeded: the same numbers every time)
            import shutil

            work = Path(tmp) / NAME
            shutil.copytree(Path(args.zoo) / NAME, work)
            cert = ad.certify(work, device="PCM", engine="aihwkit", data="digits", times="1s,1h,1d,1y", repeats=args.repeats,
                              seed=args.seed, max_drop=args.max_drop, at=args.at, progress=bar)
            means = {r["time"]: round(r["mean"], 4) for r in cert["results"]}
            print(f"[{time.time() - t0:5.1f}s] re-certified on PCM: digital {cert['digital']}, {means}, "
                  f"verdict {cert.get('verdict')}", flush=True)
            entry = zoo.publish(work, zoo=args.zoo, name=NAME, overwrite=True)
            print(f"[{time.time() - t0:5.1f}s] published {NAME}: {entry['size'] / 1e3:.0f} kB, "
                  f"sha256 {entry['sha256'][:16]}...")
            return 0
        base = ad.convert("lenet", output=Path(tmp) / "lenet", num_classes=10, seed=args.seed)
        print(f"[{time.time() - t0:5.1f}s] converted: {base.report.summary().splitlines()[0]}", flush=True)
        recovered = ad.recover(base.path, "msnat", "digits", output=Path(tmp) / NAME, overrides=args.override,
                               progress=bar)
        best = recovered.config.get("training", {}).get("best")
        print(f"[{time.time() - t0:5.1f}s] recovered with msnat: {best}", flush=True)
        exported = ad.export(recovered.path)
        check = exported.validation
        print(f"[{time.time() - t0:5.1f}s] exported {exported.file.name}: onnxruntime check "
              f"{'passed' if check.passed else 'FAILED'} (max |diff| {check.max_abs:.1e})", flush=True)
        cert = ad.certify(recovered.path, device="PCM", engine="aihwkit", data="digits", times="1s,1h,1d,1y", repeats=args.repeats,
                          seed=args.seed, max_drop=args.max_drop, at=args.at, progress=bar)
        means = {r["time"]: round(r["mean"], 4) for r in cert["results"]}
        print(f"[{time.time() - t0:5.1f}s] certified on PCM: digital {cert['digital']}, {means}, "
              f"verdict {cert.get('verdict')}", flush=True)
        entry = zoo.publish(recovered.path, zoo=args.zoo, name=NAME, overwrite=True)
    print(f"[{time.time() - t0:5.1f}s] published {NAME}: {entry['size'] / 1e3:.0f} kB, sha256 {entry['sha256'][:16]}...")
    if entry["size"] >= 1_000_000:
        print(f"warning: {NAME} is {entry['size']} bytes; the shipped zoo entry should stay under 1 MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
