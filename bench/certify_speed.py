"""What one Monte Carlo repeat at one time point costs next to one digital inference pass.

    .venv/bin/python bench/certify_speed.py [--model lenet] [--tile torch|cpp] [--n 20]

Same data (digits test split, 271 images), one thread, medians over --n runs. Splits the repeat
into aihwkit's own steps (program_analog_weights, drift_analog_weights, the analog forward) and
times the same repeat written directly against aihwkit, so the overhead beside aihwkit is visible.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--tile", default="torch", choices=["torch", "cpp"])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import analogai_deploy as ad
    from analogai_deploy.certification import CertifyConfig, DeviceConfig
    from analogai_deploy.certification.bench import load, simulate
    from analogai_deploy.certification.montecarlo import monte_carlo
    from analogai_deploy.hardware.devices import rpu_config
    from analogai_deploy.metrics import run, score
    from analogai_deploy.benchmarks import median_time

    with tempfile.TemporaryDirectory() as tmp:
        ad.convert(args.model, output=f"{tmp}/pkg", num_classes=10)
        cfg = CertifyConfig(device=DeviceConfig(name="PCM", tile=args.tile), repeats=1, times=["1d"])
        bench = load(f"{tmp}/pkg", cfg)
        start = time.perf_counter()
        sim = simulate("aihwkit", bench.digital, rpu_config(cfg.device, args.tile))
        analog = sim.model
        convert_s = time.perf_counter() - start
        times = cfg.time_points()

        x = bench.data.batches[0]

        @torch.no_grad()
        def bare_aihwkit():  # the same repeat written directly against aihwkit, nothing around it
            torch.manual_seed(0)
            analog.program_analog_weights()
            analog.drift_analog_weights(86400.0)
            analog(x)

        digital = median_time(lambda: run(bench.digital, bench.data), args.n)
        ours, bare = [], []
        for _ in range(args.n):  # interleaved, so machine load hits both alike
            ours.append(median_time(lambda: monte_carlo(sim, bench, times, 1, 0), 1))
            bare.append(median_time(bare_aihwkit, 1))
        repeat, bare_s = statistics.median(ours), statistics.median(bare)
        program = median_time(analog.program_analog_weights, args.n)
        drift = median_time(lambda: analog.drift_analog_weights(86400.0), args.n)
        forward = median_time(lambda: run(analog, bench.data), args.n)
        outputs = run(analog, bench.data)
        scoring = median_time(lambda: score(bench.metric, outputs, bench.data, bench.reference), args.n)
    aihwkit = program + drift + forward
    print(json.dumps({
        "model": args.model, "tile": args.tile, "threads": args.threads, "n_inputs": bench.data.n,
        "convert_once_ms": round(1e3 * convert_s, 2),
        "digital_pass_ms": round(1e3 * digital, 3),
        "repeat_at_one_time_ms": round(1e3 * repeat, 3),
        "ratio_repeat_vs_digital": round(repeat / digital, 2),
        "aihwkit_program_ms": round(1e3 * program, 3),
        "aihwkit_drift_ms": round(1e3 * drift, 3),
        "aihwkit_forward_ms": round(1e3 * forward, 3),
        "aihwkit_total_ms": round(1e3 * aihwkit, 3),
        "certify_scoring_ms": round(1e3 * scoring, 3),
        "bare_aihwkit_repeat_ms": round(1e3 * bare_s, 3),
        "overhead_beside_aihwkit_ms": round(1e3 * (repeat - bare_s), 3),
    }, indent=2))


if __name__ == "__main__":
    main()
