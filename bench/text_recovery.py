"""Text packages on PCM: certify before and after recovery, recipes side by side at the same training budget.

    .venv/bin/python bench/text_recovery.py minilm --data text:/tmp/train48.txt --budget 20
    .venv/bin/python bench/text_recovery.py smollm2 --recipes none single_noise --data generated:24 --budget 2 \\
        --times 1d --metrics next_token_agreement perplexity_ratio

MODEL is a package folder, or `minilm` / `smollm2` (converted here from what the test extras ship).
Budget: gradient passes over one mini-batch, the same for every recipe: a recipe whose round costs
P passes per mini-batch (K FI clients x (1 + feedback loops)) gets budget / (P x steps per round)
rounds, at least 1. Each recovered package is certified with the default certify settings (the
package's own mapping) on --cert-data at --times, --repeats repeats, --engine, and with --split also with
the digital-outlier split (certify --outliers digital --outlier-std K) and its share of the weights digital.
Before each recipe trains, one of its training steps is timed (the median of --step-repeats after one
untimed; an MSNAT client's step, feedback loops included) beside a digital distillation step timed at the
start of the run (the same loss, noise off, one pass); --time-steps only times them. The script prints one
JSON line per run and a markdown table.
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path

import analogai_deploy as ad
from analogai_deploy.benchmarks.ablation_plan import passes_per_batch
from analogai_deploy.benchmarks.common import scratch_dir
from analogai_deploy.benchmarks.speed_workloads import text_package
from analogai_deploy.recovery import recipe as recipes


def source(name: str, work: Path) -> Path:
    if Path(name).is_dir():
        return Path(name)
    if name not in ("minilm", "smollm2"):
        raise SystemExit(f"unknown model {name!r}: a package folder, minilm or smollm2")
    return text_package(name, work)


#: overrides that turn every noise model off: the plain digital distillation step the recipes' are measured against
DIGITAL = ["recovery.noise_0.act_inject.sigma=0.0", "noise.scale=tile", "noise.model=gaussian",
           "noise.input_scaling=none"]


def step_seconds(base: Path, name: str, data: str, over: list[str], repeats: int = 3):
    """Median seconds of one training step of `name` (with the run's overrides `over`) on one mini-batch, after
    one untimed step: one model's step (an MSNAT client's, feedback loops included) at the middle noise level,
    or one aihwkit HWA step on its tiles. Returns (seconds, the resolved recipe, the training examples)."""
    import statistics

    import torch

    from analogai_deploy.recovery import install_training_noise, prepare_run
    from analogai_deploy.recovery.batches import Batches
    from analogai_deploy.recovery.trainers import make_trainer

    pkg, rec, ds, obj = prepare_run(base, name, data, over)
    install_training_noise(pkg, pkg.model, rec)  # as recover does: the recipe's (text section's) noise and IO
    x, y = next(Batches(ds.train, rec.training.batch_size, torch.device("cpu")).iterate())
    with tempfile.TemporaryDirectory() as tmp:
        if rec.training.engine == "aihwkit_hwa":
            tr = make_trainer(pkg.model, rec, ds, Path(tmp), identity={}, placement=pkg.placement, objective=obj)

            def step():
                tr.optimizers[0].zero_grad()
                obj.loss(obj.forward(tr.analog, x), obj.targets(x, y), x, None).backward()
                tr.optimizers[0].step()
        else:
            tr = make_trainer(pkg.model, rec, ds, Path(tmp), identity={}, objective=obj)
            tr.noise[0].set(rec.recovery.sigmas[len(rec.recovery.sigmas) // 2])
            loss_fn = tr.make_loss_fn(tr.noise[0])

            def step():
                tr.train_step(0, x, y, loss_fn)
        ts = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            step()
            ts.append(time.perf_counter() - t0)
    return statistics.median(ts[1:]), rec, len(ds.train)


def certificates(path: Path, args, write: bool) -> list[dict]:
    """The package certified per metric, pure analog and (--split) with the digital-outlier split."""
    mappings = [None] + ([{"outliers": "digital", "outlier_std": args.outlier_std}] if args.split else [])
    out = []
    for metric in args.metrics:
        for mapping in mappings:
            cert = ad.certify(path, data=args.cert_data, times=args.times, repeats=args.repeats, engine=args.engine,
                              metric=metric, write=write and mapping is None, limit=args.limit, mapping=mapping)
            split = cert["mapping"].get("digital_outliers")
            out.append({
                "metric": cert["metric"], "digital": cert["digital"][cert["metric"]], "data": cert["data"],
                "mapping": "digital outliers" if split else "pure analog",
                "weight_share": split["weight_share"] if split else 0.0,
                "mac_share": split["mac_share"] if split else 0.0,
                "results": {r["time"]: {"mean": r["mean"], "ci95": r["ci95"], "values": r["values"]}
                            for r in cert["results"]}})
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
    ap.add_argument("--split", action="store_true", help="certify each package also with the digital-outlier split")
    ap.add_argument("--outlier-std", type=float, default=2.5, help="the split's bound (certify --outlier-std)")
    ap.add_argument("--work", default=None,
                    help="keep the trained packages in this folder (default: a temporary one, removed at the end)")
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    ap.add_argument("--time-steps", action="store_true", help="only time one training step of each recipe")
    ap.add_argument("--step-repeats", type=int, default=3, help="timed training steps per recipe (median)")
    args = ap.parse_args()
    work = Path(args.work) if args.work else scratch_dir("text-bench-")
    work.mkdir(parents=True, exist_ok=True)
    base = source(args.model, work)
    batch = f"training.batch_size={args.batch_size}"
    digital = step_seconds(base, "vanilla", args.data, [batch, *DIGITAL], args.step_repeats)[0]
    print(f"digital distillation step: {digital:.2f} s (batch {args.batch_size})", flush=True)
    rows = []
    for name in args.recipes:
        pkg_path, info = base, {"recipe": name}
        if name != "none":
            lr = args.hwa_lr if recipes.load(name).training.engine == "aihwkit_hwa" else args.lr
            over = [batch, f"training.lr={lr}", "training.schedule=constant",
                    *args.set, *[kv for r, kv in args.rset if r == name]]
            step, rec, n_train = step_seconds(base, name, args.data, over, args.step_repeats)
            gc.collect()  # the timed trainer's models (reference cycles) go before recover builds its own
            print(f"{name} step: {step:.2f} s, {step / digital:.2f}x digital", flush=True)
            info.update(step_s=round(step, 3), digital_step_s=round(digital, 3),
                        step_x_digital=round(step / digital, 2))
            if args.time_steps:
                continue
            steps = -(-n_train // args.batch_size)
            per = passes_per_batch(rec)
            rounds = max(1, args.budget // (per * steps))
            out = work / f"{Path(base).name}-{name}"
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            pkg = ad.recover(base, name, args.data, output=out, overrides=[*over, f"training.rounds={rounds}"])
            seconds = time.perf_counter() - start
            t = pkg.config["training"]
            info.update(overrides=over, rounds=rounds, passes_per_step=per, steps_per_round=steps,
                        gradient_passes=rounds * steps * per, train_s=round(seconds, 1), best=t["best"],
                        objective=t["objective"]["loss"])
            pkg_path = out
        elif args.time_steps:
            continue
        info["certificates"] = certificates(pkg_path, args, write=name != "none")
        rows.append(info)
        line = json.dumps(info)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(line + "\n")
    if rows:
        print(table(rows, args.times.split(",")))


def table(rows: list[dict], times: list[str]) -> str:
    """The markdown table: per recipe its budget, training time and step cost, then per certificate (metric x
    mapping) the share of weights digital and the mean [95% CI] at each time."""
    certs = rows[0]["certificates"]
    head = ["recipe", "gradient passes", "train s", "s / step (x digital)"] + [
        f"{c['metric']} {c['mapping']} @{t}" for c in certs for t in times] + [
        f"digital share ({c['metric']})" for c in certs if c["mapping"] != "pure analog"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        step = f"{r['step_s']:.2f} ({r['step_x_digital']:.2f}x)" if "step_s" in r else "-"
        cells = [f"{c['results'][t]['mean']:.4f} [{c['results'][t]['ci95'][0]:.4f}, {c['results'][t]['ci95'][1]:.4f}]"
                 for c in r["certificates"] for t in times]
        shares = [f"{c['weight_share']:.2%}" for c in r["certificates"] if c["mapping"] != "pure analog"]
        lines.append("| " + " | ".join([r["recipe"], str(r.get("gradient_passes", 0)), str(r.get("train_s", "-")),
                                        step, *cells, *shares]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
