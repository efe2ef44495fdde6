"""The speed table of BENCHMARKS.md from a `speed` result: ratios, targets met or missed, peak memory."""
from __future__ import annotations

from typing import Any

from .common import describe_machine, isfinite
from .speed_config import LABELS, TEXT_MODELS


def _ms(s: float) -> str:
    return f"{1e3 * s:.1f} ms" if s < 10 else f"{s:.1f} s"


def _mb(v: float | None) -> str:
    return "-" if v is None or not isfinite(v) else f"{v:.0f} MB"


def _verdict(ratio: float, target: float) -> str:
    return f"<= {target:g}x: met" if ratio <= target else f"<= {target:g}x: **missed by {ratio / target - 1:.0%}**"


def speed_markdown(result: dict[str, Any]) -> str:
    g = result["groups"]
    cfg = result["config"]
    rows = ["| figure | ours | reference | ratio | target | peak memory (ours / reference) |",
            "|---|---|---|---|---|---|"]

    def row(label, a, b, target, ga, gb=None):
        gb = gb or ga
        ratio = ga[a]["median_s"] / gb[b]["median_s"]
        tgt = _verdict(ratio, target) if isinstance(target, float) else target
        rows.append(f"| {label} | {_ms(ga[a]['median_s'])} | {_ms(gb[b]['median_s'])} | {ratio:.2f}x | {tgt} | "
                    f"{_mb(ga[a].get('peak_mb'))} / {_mb(gb[b].get('peak_mb'))} |")
        return ratio

    for m in cfg["msnat_models"]:
        grp = g.get(f"msnat_round:{m}")
        if not grp:
            continue
        k, n = grp.get("_k", 5), grp.get("_samples")
        what = f"{LABELS[m]} ({n} digits samples{', 3x32x32' if m != 'lenet' else ''})"
        row(f"(a) {what}: MSNAT round (K={k} clients, FL) vs K x 4-pass digital epochs (the method's need)",
            "msnat_round_clients", "method_need", 1.1, grp)
        row(f"(a) {what}: MSNAT round vs one plain digital epoch (same samples)", "msnat_round_clients",
            "digital_epoch", f"~{4 * k}x by design", grp)
    for m in cfg["step_models"]:
        grp = g.get(f"train_step:{m}")
        if not grp:
            continue
        shape = "x".join(map(str, cfg["shape"]))
        batch = cfg["gpu_batch"] if cfg["gpu"] else cfg["batch"]
        row(f"(b) {LABELS[m]}: our noise-injected step vs plain digital step (batch {batch}, {shape})", "ours_noise",
            "digital", 1.05, grp)
        for name, label in (("aihwkit_hwa_torch", "PyTorch tile"), ("aihwkit_hwa_cpp", "C++ tile")):
            if name in grp:
                row(f"(b) {LABELS[m]}: aihwkit HWA step ({label}, ADD_NORMAL) vs plain digital step", name,
                    "digital", "reference", grp)
                row(f"(b) {LABELS[m]}: our noise-injected step vs aihwkit HWA step ({label})", "ours_noise", name,
                    "< 1x", grp)
    for m in cfg["certify_models"]:
        c = g.get(f"certify:{m}")
        if not c:
            continue
        label = LABELS[m]
        digital = c["digital_pass"]["median_s"]
        per = {k: c[k]["median_s"] / 4 for k in ("aihwkit_torch", "aihwkit_cpp", "fast") if k in c}
        for key, name in (("aihwkit_torch", "aihwkit PyTorch tile"), ("aihwkit_cpp", "aihwkit C++ tile")):
            if key in per:
                rows.append(f"| (c) {label}: {name}, per repeat x time point (1s,1h,1d,1y certificate) vs one "
                            f"digital pass | {_ms(per[key])} | {_ms(digital)} | {per[key] / digital:.2f}x | "
                            f"reference | {_mb(c[key].get('peak_mb'))} / {_mb(c['digital_pass'].get('peak_mb'))} |")
        if "fast" not in per:
            rows.append(f"| (c) {label}: fast engine | not supported: {c.get('_fast_unsupported', '?')} | | | "
                        f"<= 3x: **missed** | |")
            continue
        ratio = per["fast"] / digital
        others = [v for k, v in per.items() if k != "fast"]
        versus = (f"vs aihwkit's fastest tile {per['fast'] / min(others):.2f}x "
                  f"({'faster' if per['fast'] <= min(others) else '**slower**'})" if others else
                  "aihwkit: " + c.get("_aihwkit_torch_unsupported", "not run"))
        rows.append(f"| (c) {label}: fast engine, per repeat x time point vs one digital pass | {_ms(per['fast'])} | "
                    f"{_ms(digital)} | {ratio:.2f}x | {_verdict(ratio, 3.0)}; {versus} | "
                    f"{_mb(c['fast'].get('peak_mb'))} / {_mb(c['digital_pass'].get('peak_mb'))} |")
        prog, drift, fwd = (c[k]["median_s"] for k in ("fast_program", "fast_drift", "fast_forward"))
        sys_ms = {k: 1e3 * c[k]["sys_s"] / 4 for k in per}
        rows.append(f"| (c) {label}: where the fast repeat goes | program {_ms(prog)}, drift {_ms(drift)}, "
                    f"forward {_ms(fwd)}; system time per repeat x time: "
                    + ", ".join(f"{k} {v:.1f} ms" for k, v in sys_ms.items()) + " | | | | |")
    for m in cfg.get("text_models", []):
        grp = {**g.get(f"text_step:{m}/hw_noise", {}), **g.get(f"text_step:{m}/msnat_client", {})}
        if not grp:
            continue
        what = f"{TEXT_MODELS[m]}, batch {cfg['text_batch']}" + (f" ({grp['_tokens']} tokens)" if grp.get("_tokens") else "")
        for a, b, label, target in (
                ("hw_noise", "digital", "hardware-matched noise step (single_noise, text) vs digital distillation step",
                 1.3),
                ("hw_noise_torch", "digital", "the same on the torch path (before: ANALOGAI_FUSED_TILE=0) vs digital "
                 "step", "before"),
                ("msnat_client", "msnat_need", "MSNAT client step (msnat, text; FL: 4 passes) vs its 4-pass digital "
                 "need", 1.1),
                ("msnat_client_torch", "msnat_need", "the same on the torch path (before) vs its 4-pass digital need",
                 "before")):
            if a in grp and b in grp:  # the torch path is not timed with text_torch_path off
                row(f"(f) {what}: {label}", a, b, target, grp)
        sys_ms = {k: 1e3 * grp[k]["sys_s"] for k in ("digital", "hw_noise", "hw_noise_torch", "msnat_client",
                                                     "msnat_client_torch", "msnat_need") if k in grp}
        rows.append(f"| (f) {what}: system time per step | " + ", ".join(f"{k} {v:.0f} ms" for k, v in sys_ms.items())
                    + " | | | | |")
    clock = "wall time" if cfg["gpu"] else "CPU time of the one benchmark thread (time.process_time)"
    text = (f"Measured on: {describe_machine(result['machine'])}; {clock}, medians of {cfg['n']} interleaved runs "
            f"(MSNAT rounds: {max(6, cfg['n'] // 2)}).\n\n" + "\n".join(rows) + "\n")
    return text
