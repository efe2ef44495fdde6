"""The engine agreement table: the fast engine's means inside aihwkit's 95% CI?"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import bench_models, machine

# ---- fast engine vs aihwkit ------------------------------------------------------------------------------
AGREEMENT_CONDITIONS = {"PCM (7-bit DAC, 9-bit ADC)": {}, "PCM, 5-bit ADC": {"adc_bits": 5}}


def agreement(out_dir: str | Path = "runs/bench/agreement", repeats: int = 20, data: str = "digits",
              models: dict[str, tuple[str, list[int] | None, int]] | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Certify the same trained packages with both engines; is the fast mean inside aihwkit's 95% CI?

    models: label -> (source spec, input_shape, vanilla training rounds). The two engines use
    different seeds, so they draw independent Monte Carlo samples.
    """
    import analogai_deploy as ad

    models = models or {"LeNet": ("lenet", None, 10), "ResNet-8": (f"{bench_models()}:small_resnet", [1, 8, 8], 8)}
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, (spec, shape, rounds) in models.items():
        pkg = root / f"{label}-vanilla"
        if not (pkg / "config.json").is_file():
            kw = {"input_shape": shape} if shape else {}
            ad.convert(spec, output=root / f"{label}-init", num_classes=10, **kw)
            ad.recover(root / f"{label}-init", "vanilla", data, output=pkg, overrides=[f"training.rounds={rounds}"])
        for cond, io in AGREEMENT_CONDITIONS.items():
            certs = {}
            for engine, seed in (("aihwkit", 0), ("fast", 100_000)):
                certs[engine] = ad.certify(pkg, data=data, repeats=repeats, seed=seed, engine=engine, write=False, **io)
            if log:
                log(f"{label} / {cond}: aihwkit {1e3 * certs['aihwkit'].timing['per_eval_s']:.0f} ms per eval, "
                    f"fast {1e3 * certs['fast'].timing['per_eval_s']:.0f} ms")
            for ra, rf in zip(certs["aihwkit"]["results"], certs["fast"]["results"]):
                rows.append({"model": label, "condition": cond, "time": ra["time"],
                             "digital": certs["aihwkit"]["digital"]["accuracy"],
                             "aihwkit": {k: ra[k] for k in ("mean", "std", "ci95")},
                             "fast": {k: rf[k] for k in ("mean", "std", "ci95")},
                             "inside": ra["ci95"][0] <= rf["mean"] <= ra["ci95"][1],
                             "aihwkit_eval_s": certs["aihwkit"].timing["per_eval_s"],
                             "fast_eval_s": certs["fast"].timing["per_eval_s"]})
    result = {"repeats": repeats, "data": data, "rows": rows, "machine": machine()}
    (root / "agreement.json").write_text(json.dumps(result, indent=1))
    return result


def agreement_markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    out = [f"{result['repeats']} repeats per engine and time point, {result['data']} test split; aihwkit engine = "
           "aihwkit's PyTorch tiles (seeds 0..), fast engine = independent seeds (100000..).\n",
           "| model | condition | time | aihwkit mean [95% CI] | fast mean [95% CI] | fast mean inside aihwkit CI |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        a, f = r["aihwkit"], r["fast"]
        out.append(f"| {r['model']} | {r['condition']} | {r['time']} | {100 * a['mean']:.2f} "
                   f"[{100 * a['ci95'][0]:.2f}, {100 * a['ci95'][1]:.2f}] | {100 * f['mean']:.2f} "
                   f"[{100 * f['ci95'][0]:.2f}, {100 * f['ci95'][1]:.2f}] | {'yes' if r['inside'] else '**no**'} |")
    inside = sum(r["inside"] for r in rows)
    per = {}
    for r in rows:
        per.setdefault((r["model"], r["condition"]), (r["aihwkit_eval_s"], r["fast_eval_s"]))
    speed = "; ".join(f"{m} / {c}: {1e3 * a:.0f} ms vs {1e3 * f:.0f} ms" for (m, c), (a, f) in per.items())
    out.append(f"\n{inside} of {len(rows)} fast means lie inside aihwkit's 95% CI. Time per repeat and time point "
               f"(aihwkit vs fast, this run, machine shared): {speed}.\n")
    return "\n".join(out)


