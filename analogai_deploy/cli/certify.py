"""`certify`: Monte Carlo accuracy of a package on simulated analog chips (aihwkit) under drift."""
from __future__ import annotations

from typing import Annotated

import typer

from ._options import DistTimeout, Json, Quiet, rank_output

EXAMPLES = """
Examples:

  analogai-deploy certify runs/lenet --device PCM --data digits

  analogai-deploy certify runs/lenet --times 1s,1h,1d,1y --repeats 10 --max-drop 1.0 --at 1d

  analogai-deploy certify runs/lenet --device ReRAM --dac-bits 8 --adc-bits 8 --out-noise 0.04 --json

  analogai-deploy certify runs/lenet inference.platform.aihwkit.device=PCM inference.platform.aihwkit.n_w=0.2

  analogai-deploy certify runs/lenet --preset standard-hwa

  analogai-deploy certify runs/lenet --engine fast --repeats 50

  analogai-deploy certify runs/resnet18 --repeats auto --ci-width 1   # repeats until every 95% CI is +-1 pp

  analogai-deploy certify runs/lenet --sweep n_w=0:0.2:10 --times 1d --repeats 5

  analogai-deploy certify runs/lenet --device custom --device-file my-device.yaml

  analogai-deploy certify runs/minilm            # text: label-free, cosine vs the digital model

  analogai-deploy certify runs/minilm --weight-scaling tile --input-scaling none --output-scaling tile  # the old mapping

  analogai-deploy certify runs/lenet --clip channel_std --clip-value 2.5 --input-range calibrated
  analogai-deploy certify runs/minilm --outliers digital --outlier-std 2.5   # outlier weights beside the tiles

  analogai-deploy certify runs/minilm --data text:my_heldout.txt   # your own text, one example per line

  analogai-deploy certify runs/bert-cls --data text:test.jsonl     # labelled text: accuracy

  analogai-deploy certify runs/smollm2 --metric perplexity_ratio --max-drop 5   # causal LM: ratio <= 1.05
  analogai-deploy certify /read-only/lenet -o runs/lenet-certified   # a certified copy, input untouched

  analogai-deploy certify runs/lenet --repeats 40 --nproc 4   # repeats spread over 4 processes, same certificate

  torchrun --nproc-per-node 4 -m analogai_deploy certify runs/lenet --repeats 40   # or under torchrun

Devices: PCM (PCMLikeNoiseModel g_max=25 + GlobalDriftCompensation), ReRAM (ReRamWan2022NoiseModel),
ReRAM-CMO (ReRamCMONoiseModel), Hermes-PCM (HermesNoiseModel), ideal (no noise, no drift, perfect IO),
custom (YAML: noise_model: PCMLikeNoiseModel / params: {g_max: 25.0} / io: {dac_bits: 8, out_noise: 0.04}).

Tiles: auto uses aihwkit's PyTorch tiles, whose every random draw follows --seed (same seed, same
certificate), and the C++ tiles when a setting needs them (--n-w, --preset standard-hwa); the C++
tiles' read noise comes from an unseeded generator, so their numbers vary slightly between runs.

--match-qat: for packages recovered with QAT (config.json "quantization"), sets the DAC to the
activation bits QAT trained for (a_bits), so the certificate simulates the converter the model expects.

Engines: auto (default) runs fast where it is validated for the package and device, else aihwkit, and
the certificate says which ran and why; aihwkit runs aihwkit's tiles; fast draws the same aihwkit device statistics
(programming noise, drift, read noise, drift compensation) and runs the network's fused forward
with the PyTorch tile's DAC/ADC, output noise and bound management around each layer: several times
faster, statistically equal (BENCHMARKS.md); it covers the PyTorch tile's settings (not --n-w, --preset).

Mapping (docs/certify.md): how weights and signals go onto the tiles. Defaults come from the package's
config.json["mapping"] (what it was converted or trained for; new packages: one scale per output column,
per-channel input scaling calibrated on data, dynamic abs-max inputs, one drift correction per tile, no
clipping; packages from before mapping options: one scale per tile). A flag here overrides one field and
the certificate records it. The IO settings a package was trained for (its "io") are the default IO.

Metrics: the task's own by default (accuracy with labels, agreement for unlabelled classifiers, cosine
for encoders, next_token_agreement for causal LMs). --max-drop is in percentage points in the metric's bad
direction: below digital for the others, above it for perplexity_ratio (5 = at most 5% more perplexity).
A text file the package was recovered on is certified on its test split only; any other file, all of it.

Exit codes: 0 certified (and the gate passed), 1 the gate failed (the certificate is still written), 2 bad input.
"""


def register(app: typer.Typer) -> None:
    app.command(help="Certify a package on a simulated analog device (aihwkit's device models): accuracy vs time after programming, with a pass/fail gate."
                + EXAMPLES)(certify)


def certify(
    package: Annotated[str, typer.Argument(help="Package folder.")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="KEY=VALUE settings, e.g. inference.platform.aihwkit.n_w=0.2 or dac_bits=8.", show_default=False)] = None,
    device: Annotated[str | None, typer.Option("--device", "-d", help="PCM, ReRAM, ReRAM-CMO, Hermes-PCM, ideal or custom. [default: PCM]")] = None,
    device_file: Annotated[str | None, typer.Option(help="YAML file for --device custom.")] = None,
    data: Annotated[str | None, typer.Option(help="Dataset (digits, cifar10:PATH, ...); text: sentences (built-in), corpus (shipped held-out English), text:FILE (.txt/.jsonl/.csv), generated:N (causal LMs) or tokens. [default: digits / sentences]")] = None,
    metric: Annotated[str, typer.Option(help="auto, accuracy, agreement (vs digital top-1), cosine, next_token_agreement or perplexity_ratio (causal LMs; lower is better).")] = "auto",
    times: Annotated[str | None, typer.Option(help="Times after programming: 1s,1h,1d,1y or seconds. [default: 1s,1h,1d,1y; ReRAM: 1s,1d,2d]")] = None,
    repeats: Annotated[str | None, typer.Option(help="Monte Carlo repeats (fresh programming noise each), or auto: add repeats until every time's 95% CI half-width is <= --ci-width. [default: 10]")] = None,
    ci_width: Annotated[float | None, typer.Option(help="With --repeats auto: the 95% CI half-width to reach at every time, in percentage points. [default: 1.0]")] = None,
    max_repeats: Annotated[int, typer.Option(help="With --repeats auto: the most repeats to run.")] = 200,
    seed: Annotated[int | None, typer.Option(help="Repeat r is programmed with seed + r; each time point draws from its own stream (seed, r, t). [default: 0]")] = None,
    max_drop: Annotated[float | None, typer.Option(help="Gate: fail when the lower 95% CI is more than this many percentage points below digital.")] = None,
    at: Annotated[str, typer.Option(help="Gate time.")] = "1d",
    dac_bits: Annotated[int | None, typer.Option(help="Input DAC bits (0 = unquantised). [default: 7]")] = None,
    adc_bits: Annotated[int | None, typer.Option(help="Output ADC bits (0 = unquantised). [default: 9]")] = None,
    out_noise: Annotated[float | None, typer.Option(help="Output noise. [default: 0.06]")] = None,
    tile_size: Annotated[int | None, typer.Option(help="Crossbar rows = columns. [default: 512]")] = None,
    drift_compensation: Annotated[bool | None, typer.Option("--drift-compensation/--no-drift-compensation", help="Global drift compensation. [default: on]")] = None,
    n_w: Annotated[float | None, typer.Option("--n-w", help="aihwkit forward.w_noise per MAC (the seed's n_w; C++ tiles).")] = None,
    w_noise_type: Annotated[str | None, typer.Option(help="additive_constant, pcm_read or relative.")] = None,
    preset: Annotated[str | None, typer.Option(help="standard-hwa: aihwkit's StandardHWATrainingPreset.")] = None,
    tile: Annotated[str | None, typer.Option(help="auto, cpp or torch. [default: auto]")] = None,
    engine: Annotated[str, typer.Option(help="aihwkit (aihwkit's tiles), fast (aihwkit's device model around the fused forward) or auto: fast where it is validated for the package and device, else aihwkit (the certificate says which ran and why).")] = "auto",
    match_qat: Annotated[bool, typer.Option(help="Set the DAC bits to the package's QAT a_bits.")] = False,
    limit: Annotated[int | None, typer.Option(help="Evaluate on at most this many test samples.")] = None,
    weight_scaling: Annotated[str | None, typer.Option(help="Mapping: one weight scale per 'tile' or per output 'column' (aihwkit weight_scaling_columnwise). [default: the package's; new packages: column]")] = None,
    clip: Annotated[str | None, typer.Option(help="Mapping: clip weights before programming: none, fixed (|w| <= --clip-value), layer_std or channel_std (--clip-value std per layer / output channel). [default: the package's; new: none]")] = None,
    clip_value: Annotated[float | None, typer.Option(help="Mapping: the clip bound (fixed: weight units; *_std: std multiples). [default: 3]")] = None,
    input_range: Annotated[str | None, typer.Option(help="Mapping: 'dynamic' abs-max scaling per input vector, 'calibrated' static range per layer from data (aihwkit pre_post.input_range), or 'learned' (the ranges a recipe with io.input_range: learned recorded, e.g. afm). [default: the package's; new: dynamic]")] = None,
    input_range_k: Annotated[float | None, typer.Option(help="Mapping: calibrated range = this many std of the layer's inputs. [default: 3]")] = None,
    input_scaling: Annotated[str | None, typer.Option(help="Mapping: 'channel' per-input-channel digital scales calibrated on data, folded into the weights, or 'none'. [default: the package's; new: channel]")] = None,
    input_scaling_alpha: Annotated[float | None, typer.Option(help="Mapping: s_j = max|x_j|^a / max|W_:j|^(1-a). [default: the package's; new: 0.4]")] = None,
    output_scaling: Annotated[str | None, typer.Option(help="Mapping: drift-compensation gain per 'tile' (GlobalDriftCompensation) or per output 'column' (PerColumnDriftCompensation). (column needs --weight-scaling column: aihwkit reads each column out one-hot, and a column read as 0 by the ADC explodes) [default: the package's; new: tile]")] = None,
    calibration: Annotated[str | None, typer.Option(help="Mapping: calibration data (a --data spec). [default: the train split of --data; text: built-in calibration sentences]")] = None,
    calibration_samples: Annotated[int | None, typer.Option(help="Mapping: calibration samples. [default: 64]")] = None,
    outliers: Annotated[str | None, typer.Option(help="Mapping: 'digital' keeps each Linear tile column's weights beyond --outlier-std std off the tiles, computed digitally beside them (exact), or 'none'. [default: the package's; new: none]")] = None,
    outlier_std: Annotated[float | None, typer.Option(help="Mapping: the outlier bound in std of the tile column. [default: 3]")] = None,
    sweep: Annotated[str | None, typer.Option(help="PARAM=START:STOP:N, e.g. n_w=0:0.2:10; writes sweep.csv and sweep.png.")] = None,
    output_dir: Annotated[str | None, typer.Option("-o", "--output", help="Write a copy of the package with the certificate here (e.g. for a read-only package) [default: update PACKAGE in place].")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package at -o.")] = False,
    nproc: Annotated[int, typer.Option(help="Spread the Monte Carlo repeats over N local processes (torch.distributed, gloo); same seed, same certificate.")] = 1,
    dist_timeout: DistTimeout = None,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    from ..errors import OperationFailed, UsageError
    from .. import certification as cert_mod
    from ..certification.config import implied_device
    from ..hardware.devices import canonical_device
    from .. import launcher

    out = rank_output(nproc, dist_timeout, json_, quiet)
    given = {"device": device, "dac_bits": dac_bits, "adc_bits": adc_bits, "out_noise": out_noise,
             "tile_size": tile_size, "drift_compensation": drift_compensation, "n_w": n_w,
             "w_noise_type": w_noise_type, "preset": preset, "tile": tile, "times": times, "repeats": repeats,
             "seed": seed, "data": data, "metric": None if metric == "auto" else metric}
    for key, value in cert_mod.parse_settings(overrides).items():
        if given.get(key) is not None and str(given[key]) != value:
            raise UsageError(f"{key} is given twice ({given[key]} and {value})", "pass it once")
        given[key] = value
    mapping = {k: v for k, v in {
        "weight_scaling": weight_scaling, "clip": clip, "clip_value": clip_value, "input_range": input_range,
        "input_range_k": input_range_k, "input_scaling": input_scaling, "input_scaling_alpha": input_scaling_alpha,
        "output_scaling": output_scaling, "calibration": calibration, "calibration_samples": calibration_samples,
        "outliers": outliers, "outlier_std": outlier_std,
    }.items() if v is not None}
    for key in [k for k in given if k.startswith("mapping.")]:  # mapping.clip=channel_std as an override
        name = key.split(".", 1)[1]
        if name in mapping and str(mapping[name]) != given[key]:
            raise UsageError(f"{name} is given twice ({mapping[name]} and {given[key]})", "pass it once")
        mapping[name] = given.pop(key)
    settings = {k: v for k, v in given.items() if v is not None}
    device_name = canonical_device(implied_device(settings.pop("device", None), device_file))
    common = dict(device=device_name, device_file=device_file, max_drop=max_drop if not sweep else None, at=at,
                  match_qat=match_qat, limit=limit, times=settings.pop("times", None))
    kwargs = {**common, **settings, "engine": engine,
              "mapping": cert_mod.MappingConfig.from_dict(mapping, where="mapping.")}
    run = {"nproc": nproc, "dist_timeout": dist_timeout, "output": output_dir, "overwrite": overwrite}
    if ci_width is not None:
        kwargs["ci_width"] = ci_width
    if kwargs.get("repeats") == "auto":
        kwargs["max_repeats"] = max_repeats
    for key, cast in (("repeats", int), ("seed", int)):
        if key in kwargs and not (key == "repeats" and kwargs[key] == "auto"):
            try:
                kwargs[key] = cast(kwargs[key])
            except ValueError:
                hint = "or auto: `repeats=auto` `ci_width=1`" if key == "repeats" else None
                raise UsageError(f"`{key}` must be an integer, got {kwargs[key]!r}", hint) from None

    if sweep:
        if max_drop is not None:
            raise UsageError("--max-drop gates a certificate, not a sweep", "run the sweep and the gate separately")
        param, values = cert_mod.parse_sweep(sweep)
        out.info(f"sweeping {param} over {len(values)} values on {device_name} ...")
        result = launcher.sweep(package, param, values, progress=out.progress if out.mode == "human" else None,
                                **run, **kwargs)
        out.result(result, _sweep_text)
        return

    out.info(f"certifying {package} on {device_name} ...")
    cert = launcher.certify(package, cert_mod.settings_config(**kwargs),
                            progress=out.progress if out.mode == "human" else None, **run)
    t = cert.timing
    sim = "fast engine" if cert.get("engine") == "fast" else f"aihwkit ({cert['tile']} tiles)"
    out.info(f"{sim}: {1e3 * t['per_eval_s']:.0f} ms per repeat x time point, "
             f"digital pass {1e3 * t['digital_pass_s']:.0f} ms over the same {cert['data']['n']} inputs")
    # --json: the certificate plus how long this run took and, on a missed text gate, what the digital-outlier
    # split measured (neither is part of certificate.json: they vary run to run / are another mapping's)
    extra = {"timing": cert.timing, **({"split_hint": cert.split_hint} if cert.split_hint else {})}
    out.result({**dict(cert), **extra}, lambda c: _cert_text(c, cert))
    for warning in cert.get("warnings", []):
        out.warn(warning)
    if cert.passed is False:
        v = cert["verdict"]
        if cert.split_hint:
            out.warn(cert_mod.hint_line(cert.split_hint, cert["metric"], v["max_drop_pp"]))
        raise OperationFailed(
            f"gate failed: {v['drop_pp']:.2f} pp below digital at {v['at']} (lower 95% CI), allowed {v['max_drop_pp']:g} pp",
            "recover the model for noise (analogai-deploy recover PKG --recipe msnat)"
            + (", map its outlier weights digitally (--outliers digital, above)" if cert.split_hint else "")
            + " or relax --max-drop",
        )


def _cert_text(c: dict, cert) -> str:
    from ..package.card import results_markdown

    from ..analog.mapping import MappingConfig, MAPPING_FIELDS

    lines = [results_markdown(c)]
    m = c.get("mapping") or {}
    if m:
        label = MappingConfig.from_dict({k: m[k] for k in MAPPING_FIELDS if k in m}).label()
        over = m.get("overridden") or {}
        lines.append(f"mapping: {label}" + (f" (overridden: {', '.join(sorted(over))})" if over else ""))
    if not c.get("reproducible"):
        lines.append("note: C++ tiles: read noise is not seeded, numbers vary slightly between runs")
    lines.append(f"wrote {cert.path} and certificate.png")
    return "\n".join(lines)


def _sweep_text(r: dict) -> str:
    head = f"{r['param']:>10} {'time':>6} {'mean':>8} {'95% CI':>17}"
    rows = [f"{row['value']:>10g} {row['time']:>6} {100 * row['mean']:>7.2f}% "
            f"{100 * row['ci_low']:>7.2f}-{100 * row['ci_high']:.2f}%" for row in r["rows"]]
    digital = r["digital"].get(r["metric"])
    tiles = "the fast engine" if r["device"].get("engine") == "fast" else f"aihwkit's {r['tile']} tiles"
    where = f"every point on {tiles}, {r['repeats']} Monte Carlo repeats each, {r['data']['n']} test samples"
    return "\n".join([head, *rows, f"digital {r['metric']}: {100 * digital:.2f}%; {where}",
                      "wrote " + ", ".join(r.get("files", []))])
