"""The training engine: rounds of K noise-level clients, fusion, validation, checkpoints, resume.

One round: every client trains `epochs_per_round` epochs on the whole training set at its own noise
level (its own optimizer state), the clients are fused (FI) and broadcast, the fused model is
validated under noise, and a checkpoint is written. Without FI there is one model; with several noise
levels it takes them in turn, one per mini-batch.

Nothing is rebuilt per round: the K clients are deep copies made once, data sits on the device once
(tensor datasets), and loss/accuracy stay on the device until the end of a client's epoch.
Checkpoints are safetensors + JSON (no pickle) and hold everything the next round depends on — the
clients, their optimizer states, the RNG states, the best model so far — so a resumed run ends
bitwise where an uninterrupted one ends (CPU).
"""
from __future__ import annotations

import contextlib
import copy
import json
import re
import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .. import distributed
from .._state import load_state
from ..errors import AnalogAIError, OperationFailed, UsageError, no_room
from . import hardware_noise, msnat, parallel
from .objectives import Objective
from .recipe import Recipe

EVAL_SEED = 12345  # validation noise draws are the same every round and every run
CHECKPOINT_META = "state.json"  # the commit point: it names the tensors file of the last finished round
LOG = "train_log.jsonl"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"training.device={name} but no CUDA device is available", "use training.device=auto or cpu")
    return dev


class Batches:
    """Mini-batches of a dataset. Tensor datasets move to the device once and are indexed there."""

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device):
        self.batch_size = batch_size
        self.device = device
        self.n = len(dataset)
        self.tensors = None
        if isinstance(dataset, TensorDataset):
            self.tensors = [t.to(device) for t in dataset.tensors]
        self.dataset = dataset

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def iterate(self, generator: torch.Generator | None = None):
        order = torch.randperm(self.n, generator=generator) if generator is not None else torch.arange(self.n)
        if self.tensors is not None:
            order = order.to(self.device)
            text = getattr(self.dataset, "batch", None)  # text: (named token tensors, target), padding cut
            for i in range(0, self.n, self.batch_size):
                idx = order[i:i + self.batch_size]
                rows = tuple(t.index_select(0, idx) for t in self.tensors)
                yield text(rows) if text is not None else rows
            return
        pin = self.device.type == "cuda"
        loader = DataLoader(Subset(self.dataset, order.tolist()), batch_size=self.batch_size, shuffle=False,
                            num_workers=min(4, os.cpu_count() or 1), pin_memory=pin)
        try:
            for x, y in loader:
                yield x.to(self.device, non_blocking=pin), y.to(self.device, non_blocking=pin)
        except AnalogAIError as exc:  # a worker's error comes back with the worker's traceback as its message
            if "DataLoader worker" not in exc.message:
                raise
            raise type(exc)(exc.message.rstrip().splitlines()[-1].split(": ", 1)[-1]) from None


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, sigma: float, draws: int = 1, seed: int = EVAL_SEED,
             objective: Objective | None = None) -> dict[str, float]:
    """The objective's metric ("acc": accuracy for classifiers on labels, else e.g. the cosine to the teacher)
    and loss at weight-noise level `sigma`, mean over `draws` noise draws.

    Runs in a forked RNG so validation never changes the training's random stream.
    """
    objective = objective or Objective()
    noise = msnat.NoiseControl(model)
    saved = noise.layers[0].analog.sigma if noise.layers else 0.0
    was_training = model.training
    model.eval()
    devices = [batches.device] if batches.device.type == "cuda" else []
    correct = torch.zeros((), device=batches.device)
    loss = torch.zeros((), device=batches.device)
    draws = draws if sigma > 0 else 1
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        noise.set(sigma)
        for _ in range(draws):
            for x, y in batches.iterate():
                y = objective.targets(x, y)
                z = objective.forward(model, x).float()
                correct += objective.score(z, y, x)
                loss += objective.loss(z, y, x, None, reduction="sum")
    noise.set(saved)
    model.train(was_training)
    n = batches.n * draws
    return {"acc": correct.item() / n, "loss": loss.item() / n}


SMALL_MODEL = 1_000_000  # parameters; below this one CPU thread is faster (kernels too small to split)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees (glibc; elsewhere nothing happens): blocks are never given
    back to the system (no trim) nor mapped one by one (glibc maps every block over 32 MB, the largest
    threshold it accepts, and unmaps it on free). Training a language model allocates and frees its logits
    (tokens x vocabulary, 125 MB for 1024 tokens of a 30k vocabulary) several times per pass; mapped afresh,
    each is zeroed page by page by the kernel: a 30k-vocabulary LM's digital step spent 757 of its 1108 ms of
    CPU in the kernel, none with this (BENCHMARKS.md section 2). The process keeps its peak memory. Returns
    whether the setting took."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))  # -1: never trim
    except (OSError, AttributeError):  # not glibc
        return False


@contextmanager
def cpu_threads(requested: int, model: nn.Module, device: torch.device):
    """torch's CPU threads while training: `requested`, or for 0 one thread for small models on CPU.

    Measured on 2 busy cores, LeNet/digits MSNAT: 1 thread 5 s CPU per 3 rounds, 2 threads many times
    that in spin-waiting; small kernels gain nothing from a second thread. On the CPU the process also keeps
    the memory it frees (`keep_freed_memory`).
    """
    before = torch.get_num_threads()
    if device.type == "cpu":
        keep_freed_memory()
    n = requested or (1 if device.type == "cpu" and sum(p.numel() for p in model.parameters()) < SMALL_MODEL else 0)
    if n:
        torch.set_num_threads(n)
    try:
        yield n or before
    finally:
        torch.set_num_threads(before)


def make_trainer(model: nn.Module, recipe: Recipe, data, state_dir: Path, **kwargs) -> Trainer:
    """The loop trainer, or the batched one when training.mode asks for it (see batched.py)."""
    from . import batched

    mode = batched.resolve_mode(recipe, data, pick_device(recipe.training.device))
    cls = batched.BatchedTrainer if mode == "batched" else Trainer
    return cls(model, recipe, data, state_dir, **kwargs)


def lr_at(cfg, round_: int) -> float:
    """Learning rate of round `round_` (0-based); a pure function of the round, so nothing to checkpoint."""
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * (0.1 ** (round_ // max(1, cfg.rounds // 3)))
    if cfg.schedule == "linear":
        return cfg.lr * (1 - round_ / cfg.rounds)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * round_ / cfg.rounds))


def make_optimizer(model: nn.Module | list[torch.Tensor], recipe: Recipe):
    from . import optim  # torch's Adam / SGD, without importing torch._dynamo (optim.py)
    from .sam import SAM

    t = recipe.training
    params = [p for p in (model.parameters() if isinstance(model, nn.Module) else model) if p.requires_grad]
    if t.optimizer in ("adam", "adamw"):  # adamw: weight decay decoupled from the gradient (AdamW)
        cls = optim.Adam if t.optimizer == "adam" else optim.AdamW
        base = cls(params, lr=t.lr, betas=tuple(t.adam_betas), eps=t.adam_eps, weight_decay=t.weight_decay)
    else:
        base = optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    return SAM.from_config(base, recipe.recovery.optimizer)


# ---- checkpoint: nested optimizer state <-> flat safetensors + JSON ---------------------------------

def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().contiguous().cpu()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def write_checkpoint(state_dir: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Tensors to state-RRRR.safetensors, then state.json naming it (atomic replace), then old files go.

    A crash at any point leaves a state.json that names a complete tensors file.
    """
    from safetensors.torch import save_file

    name = f"state-{meta['round']:04d}.safetensors"
    seen: set[int] = set()
    for key, v in tensors.items():  # tied weights (an LM's embedding and head) share storage; safetensors refuses that
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen and v.numel():
            tensors[key] = v.clone()
        seen.add(ptr)
    tmp = state_dir / f".{CHECKPOINT_META}.tmp"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(state_dir / f".{name}.tmp"))
        os.replace(state_dir / f".{name}.tmp", state_dir / name)
        tmp.write_text(json.dumps({**meta, "tensors": name}, indent=1), encoding="utf-8")
        os.replace(tmp, state_dir / CHECKPOINT_META)
        for old in state_dir.glob("state-*.safetensors"):
            if old.name != name:
                old.unlink()
        with open(state_dir / LOG, "w", encoding="utf-8") as f:  # for people watching a run: tail -f
            f.writelines(json.dumps(e) + "\n" for e in meta["log"])
    except Exception as exc:  # e.g. a full disk: drop what this write began, keep the last committed round
        committed = json.loads((state_dir / CHECKPOINT_META).read_text(encoding="utf-8")) if has_checkpoint(
            state_dir) else {}
        for part in (state_dir / f".{name}.tmp", tmp, *([state_dir / name] if committed.get("tensors") != name else [])):
            part.unlink(missing_ok=True)
        if not committed:  # nothing finished: no folder left that looks like a checkpoint
            discard_checkpoint(state_dir)
        kept = (f"round {committed['round']}'s checkpoint there is kept" if committed
                else "no round was checkpointed, nothing is left there")
        err = no_room(exc, f"the checkpoint of round {meta['round']} in {state_dir}", kept,
                      "free space there and rerun the same command" + (" with `resume=True`" if committed else ""))
        if err is None:
            raise
        raise err from None


def read_checkpoint(state_dir: Path, identity: dict[str, str], mode: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The last checkpoint, refused when it belongs to another run (package, recipe, data or mode)."""
    from safetensors.torch import load_file

    meta = json.loads((state_dir / CHECKPOINT_META).read_text(encoding="utf-8"))
    for key, want in identity.items():
        if meta["identity"].get(key) != want:
            raise UsageError(f"the checkpoint in {state_dir} was made with another {key.replace('_', ' ')}",
                             "resume with the same package, recipe, overrides and data, or delete that folder")
    if meta["mode"] != mode:
        raise UsageError(f"the checkpoint in {state_dir} was made in {meta['mode']} mode, this run is {mode}",
                         f"resume with training.mode={meta['mode']}, or delete that folder")
    return load_file(str(state_dir / meta["tensors"])), meta


def close_round(trainer: Any, model: nn.Module, entry: dict[str, Any], snapshot: Callable[[], None]) -> None:
    """End a round of any trainer: validate `model` (at the recipe's eval sigma and clean), count the round,
    keep the best round (model selection on validation, never test) and the rounds since it (early stopping)."""
    t = trainer.t
    objective = getattr(trainer, "objective", None) or Objective()
    val = evaluate(model, trainer.val_batches, t.eval_sigma, t.eval_draws, objective=objective)
    clean = evaluate(model, trainer.val_batches, 0.0, objective=objective)
    # "acc" keys hold the objective's metric (accuracy on labels; a cosine or an agreement when distilling)
    entry["val"] = {"acc": val["acc"], "loss": val["loss"], "sigma": t.eval_sigma, "clean_acc": clean["acc"]}
    if objective.metric != "accuracy":
        entry["val"]["metric"] = objective.metric
    trainer.round += 1
    if not trainer.best or val["acc"] > trainer.best["val_acc"]:
        trainer.best = {"round": trainer.round, "val_acc": val["acc"], "val_loss": val["loss"],
                        "val_sigma": t.eval_sigma, "val_clean_acc": clean["acc"]}
        if objective.metric != "accuracy":
            trainer.best["metric"] = objective.metric
        snapshot()
        trainer.since_best = 0
    else:
        trainer.since_best += 1


def divergence_hint(state_dir: Path, rounds_done: int) -> str:
    kept = f"round {rounds_done}'s checkpoint stays in {state_dir}" if rounds_done else "no round finished"
    return f"lower training.lr and run again; {kept}"


#: the files a checkpoint folder holds; removing one deletes these and nothing else
_CHECKPOINT_FILE = re.compile(r"^(state\.json|state-\d+\.safetensors|train_log\.jsonl|\.state.*\.tmp)$")


def foreign_checkpoint_entries(state_dir: Path) -> list[str]:
    """What a checkpoint folder holds that training did not write (a user's files, folders, links)."""
    if not state_dir.is_dir():
        return []
    return sorted(f.name for f in state_dir.iterdir()
                  if f.is_symlink() or not f.is_file() or not _CHECKPOINT_FILE.match(f.name))


def discard_checkpoint(state_dir: Path) -> None:
    """Remove a checkpoint folder, its commit point (state.json) first: a kill halfway through the removal
    must not leave a state.json naming a tensors file that is already gone. Only checkpoint files go; a
    folder that holds anything else is left with that in it."""
    if not state_dir.is_dir() or state_dir.is_symlink():
        return
    (state_dir / CHECKPOINT_META).unlink(missing_ok=True)
    for f in state_dir.iterdir():
        if f.is_file() and not f.is_symlink() and _CHECKPOINT_FILE.match(f.name):
            f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        state_dir.rmdir()


def has_checkpoint(state_dir: Path) -> bool:
    return (state_dir / CHECKPOINT_META).exists()


def _rng_state() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda{i}"] = s
    return out


def _set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bitwise equal state dicts (same keys, dtypes, values)."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k].detach().cpu(), b[k].detach().cpu()) for k in a)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _act_ranges(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{i}": q.act_max.detach().cpu().reshape(()).clone() for i, q in enumerate(msnat._act_quantizers(model))
            if q is not None and q.act_max is not None}


def _set_act_ranges(model: nn.Module, ranges: dict[str, torch.Tensor], device) -> None:
    for i, q in enumerate(msnat._act_quantizers(model)):
        if q is not None and f"{i}" in ranges:
            q.act_max = ranges[f"{i}"].to(device)


def _postfix(bar, entry: dict[str, Any]) -> None:
    clients = entry["clients"]
    bar.set_postfix(round=entry["round"], loss=f"{sum(c['loss'] for c in clients) / len(clients):.3g}",
                    acc=f"{sum(c['acc'] for c in clients) / len(clients):.3f}",
                    val=f"{entry['val']['acc']:.3f}@{entry['val']['sigma']}")


@dataclass
class Result:
    best_state: dict[str, torch.Tensor]
    best_act_ranges: dict[str, torch.Tensor]
    best: dict[str, Any]
    rounds: int
    mode: str
    device: str
    log: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0
    resumed_from: int = 0  # rounds already done in the checkpoint this run continued (0 = fresh start)


class Trainer:
    """Runs one recipe on one model. `state_dir` holds the resumable checkpoint."""

    def __init__(self, model: nn.Module, recipe: Recipe, data, state_dir: Path, *, identity: dict[str, str],
                 progress: Callable[..., Any] | None = None, on_round: Callable[[dict], None] | None = None,
                 objective: Objective | None = None):
        self.recipe = recipe
        self.objective = objective or Objective()  # what the loss and the validation metric are (objectives.py)
        self.t = recipe.training
        self.r = recipe.recovery
        self.data = data
        self.state_dir = Path(state_dir)
        self.identity = identity  # recipe sha + input weights sha + data fingerprint: what a resume must match
        self.progress = progress
        self.on_round = on_round
        self.device = pick_device(self.t.device)
        self.amp = self.t.amp and self.device.type == "cuda"
        self.sigmas = self.r.sigmas
        self.fi = self.t.use_FI and len(self.sigmas) > 1
        self.mode = "loop"  # the K clients run one after the other (BatchedTrainer: all at once)
        model.to(self.device).train()
        if self.r.qat:
            from ..analog import qat

            self.quant = qat.attach(model, self.r.quant)
        n_clients = len(self.sigmas) if self.fi else 1
        # torch.distributed (distributed.py): with FI each rank trains its share of the clients, without FI
        # the ranks split every mini-batch (data parallel); one process trains everything
        self.dist = distributed.world() > 1
        self.mine = parallel.client_share(n_clients) if self.dist and self.fi else range(n_clients)
        self.dp = parallel.DataParallel() if self.dist and not self.fi else None
        # K deep copies made once; the fused model is separate so momentum broadcast keeps the clients distinct
        self.clients = [model] + [copy.deepcopy(model) for _ in range(n_clients - 1)]
        self.fused = copy.deepcopy(model) if self.fi else model
        self.noise = [msnat.NoiseControl(c) for c in self.clients]
        self.optimizers = [make_optimizer(c, recipe) for c in self.clients]
        self.step_clip = hardware_noise.has_step_clip(model)
        self.train_batches = Batches(data.train, self.t.batch_size, self.device)
        self.val_batches = Batches(data.val, max(256, self.t.batch_size), self.device)
        self.adv = self.r.adversarial.FGSM.use or self.r.adversarial.PGD.use
        if self.adv:
            low, high = data.pixel_bounds()
            self.bounds = (low.to(self.device), high.to(self.device), data.std_tensor.to(self.device))
        self.round = 0
        self.best: dict[str, Any] = {}
        self.best_state: dict[str, torch.Tensor] = {}
        self.best_ranges: dict[str, torch.Tensor] = {}
        self.since_best = 0
        self.log: list[dict[str, Any]] = []

    # ---- one mini-batch ------------------------------------------------------------------------------
    def _loss_fn(self, noise: msnat.NoiseControl) -> Callable:
        fl, cfg, obj = self.t.use_FL, self.r.feedback, self.objective

        def loss_fn(model, x, y):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                z, _ = msnat.feedback_logits(model, x, noise, cfg, fl, forward=obj.forward)
            return obj.loss(z, y, x, cfg.temperature if fl else None)

        return loss_fn

    def _loss(self, model, noise, loss_fn, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, the metric summed over the batch); `y` holds the targets (labels or the teacher's outputs)."""
        fl, cfg, obj = self.t.use_FL, self.r.feedback, self.objective
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            z, z0 = msnat.feedback_logits(model, x, noise, cfg, fl, forward=obj.forward)
        loss = obj.loss(z, y, x, cfg.temperature if fl else None)
        if self.adv:
            from .adversarial import adversarial_loss

            extra = adversarial_loss(model, loss_fn, x, y, self.r.adversarial, *self.bounds)
            if extra is not None:
                loss = loss + extra
        return loss, obj.score(z0.detach(), y, x)

    def _step(self, k: int, x, y, loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
        model, noise, opt = self.clients[k], self.noise[k], self.optimizers[k]
        y = self.objective.targets(x, y)  # a causal LM's teacher logits, once per batch (SAM reuses them)
        opt.zero_grad(set_to_none=True)
        loss, correct = self._loss(model, noise, loss_fn, x, y)
        loss.backward()
        if self.dp is not None:
            self.dp.sync_grads(model)
        if hasattr(opt, "first_step"):  # SAM: gradient at the perturbed point, then the real step
            opt.first_step(zero_grad=True)
            loss2, _ = self._loss(model, noise, loss_fn, x, y)
            loss2.backward()
            if self.dp is not None:
                self.dp.sync_grads(model)
            opt.second_step()
        else:
            opt.step()
        if self.step_clip:
            hardware_noise.clip_step(model)  # noise.clip_when: step (aihwkit-lightning's clip_weights)
        return loss.detach(), correct

    def _warm(self, step: int) -> None:
        """training.warmup: the learning rate ramps up linearly over the first warmup x all steps of the run (a
        pure function of the step, like lr_at of the round: nothing to checkpoint)."""
        per_round = self.t.epochs_per_round * len(self.train_batches)
        total = self.t.rounds * per_round
        done = self.round * per_round + step + 1
        lr = lr_at(self.t, self.round) * min(1.0, done / max(1.0, self.t.warmup * total))
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    # ---- one round -----------------------------------------------------------------------------------
    def _client_epoch(self, k: int, epoch: int, bar) -> dict[str, float]:
        model, noise = self.clients[k], self.noise[k]
        model.train()
        loss_fn = self._loss_fn(noise)
        g = self._shuffle(epoch, k)
        total = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        for step, (x, y) in enumerate(self.train_batches.iterate(g)):
            if self.t.warmup > 0:
                self._warm(epoch * len(self.train_batches) + step)
            if not self.fi:  # one model: it takes the noise levels in turn
                noise.set(self.sigmas[(step + self.round) % len(self.sigmas)])
            if self.dp is not None:  # this rank's slice of the global mini-batch
                x, y = self.dp.slice(x, y)
            loss, c = self._step(k, x, y, loss_fn)
            total += loss * len(y)
            correct += c
            if bar is not None:
                bar.update(1)
        if self.dp is not None:
            total, correct = self.dp.sum(total, correct)
            self.dp.sync_state(model)
        n = self.train_batches.n
        stats = {"loss": total.item() / n, "acc": correct.item() / n, "sigma": noise.sigma}
        if not math.isfinite(stats["loss"]):
            raise OperationFailed(
                f"training diverged: loss is {stats['loss']} in round {self.round + 1} (client sigma={noise.sigma})",
                self.divergence_hint(),
            )
        if bar is not None:  # significant digits: a distillation KL starts near 1e-4, which .3f shows as 0.000
            bar.set_postfix(loss=f"{stats['loss']:.3g}", acc=f"{stats['acc']:.3f}", refresh=False)
        return stats

    def _shuffle(self, epoch: int, k: int) -> torch.Generator:
        """The data order is a pure function of (seed, round, epoch, client): nothing to checkpoint."""
        return torch.Generator().manual_seed(self.t.seed * 1_000_003 + self.round * 1009 + epoch * 101 + k)

    def _client_seed(self, k: int) -> int:
        """Client k's noise stream in a round: a pure function, so a client draws the same noise in any process."""
        return self.t.seed * 1_000_003 + self.round * 1009 + k + 7

    def _train_clients(self, bar) -> list[dict[str, float]]:
        clients = {}
        with distributed.guard() if self.dist else nullcontext():  # a failing rank stops every rank
            for k in self.mine:
                if self.fi:
                    self.noise[k].set(self.sigmas[k])
                    torch.manual_seed(self._client_seed(k))
                for e in range(self.t.epochs_per_round):
                    stats = self._client_epoch(k, e, bar)
                clients[k] = stats
        if self.dist and self.fi:
            return parallel.gather_clients(clients, len(self.clients))
        return list(clients.values())

    def run_round(self, bar=None) -> dict[str, Any]:
        start = time.perf_counter()
        lr = lr_at(self.t, self.round)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        clients = self._train_clients(bar)
        entry: dict[str, Any] = {"round": self.round + 1, "lr": lr, "clients": clients}
        if self.fi:
            accs = None
            if self.r.fusion.weights == "accuracy":
                accs = {k: evaluate(self.clients[k], self.val_batches, self.sigmas[k], 1)["acc"] for k in self.mine}
                accs = parallel.gather_clients(accs, len(self.clients)) if self.dist else list(accs.values())
            a = msnat.fusion_weights(len(self.clients), accs)
            if self.dist:  # FI as an all-reduce: each rank adds its clients' a_k w_k
                parallel.fuse(self.clients, a, self.fused, self.mine)
            else:
                msnat.fuse(self.clients, a, self.fused)
            msnat.broadcast(self.fused, self.clients, self.r.fusion.keep if self.r.fusion.momentum_broadcast else 0.0)
            entry["fusion_weights"] = a
        close_round(self, self.fused, entry, self._snapshot_best)
        entry["seconds"] = round(time.perf_counter() - start, 3)
        self.log.append(entry)
        return entry

    def _snapshot_best(self) -> None:
        self.best_state = _state(self.fused)
        self.best_ranges = _act_ranges(self.fused)

    def divergence_hint(self) -> str:
        return divergence_hint(self.state_dir, self.round)

    # ---- checkpoints ---------------------------------------------------------------------------------
    def _collect_clients(self) -> None:
        """Distributed FI: every rank receives the clients (and optimizer states) other ranks trained."""
        mine = {}
        for k in self.mine:
            opt_tensors: dict[str, torch.Tensor] = {}
            opt_meta = _flatten(self.optimizers[k].state_dict(), "opt", opt_tensors)
            state = {key: v.detach().cpu() for key, v in self.clients[k].state_dict().items()}
            mine[k] = (state, _act_ranges(self.clients[k]), opt_meta, opt_tensors)
        for k, (state, ranges, opt_meta, opt_tensors) in enumerate(parallel.gather_clients(mine, len(self.clients))):
            if k not in self.mine:
                load_state(self.clients[k], state)
                _set_act_ranges(self.clients[k], ranges, self.device)
                self.optimizers[k].load_state_dict(_unflatten(opt_meta, opt_tensors))

    def save(self) -> None:
        if self.dist and self.fi:
            self._collect_clients()
        if self.dist and not distributed.is_main():
            return  # rank 0 writes the checkpoint; it is the same as one process's
        tensors: dict[str, torch.Tensor] = {}
        # Only what a bitwise resume needs: a client that equals the fused model (every client after a plain
        # broadcast) and a best state that equals it (the best round is this one) are stored once, as the
        # fused model, and named in `same_as_fused`; checked tensor by tensor, so momentum broadcast and an
        # earlier best round still store their own. Every optimizer is kept (one per client in the loop,
        # one over the stacked clients in batched mode: never zip the two lists, that kept client 0 only).
        ref = self.fused.state_dict() if self.fi else None
        ref_ranges = _act_ranges(self.fused) if self.fi else None
        same: list[str] = []
        for k, client in enumerate(self.clients):
            state, ranges = client.state_dict(), _act_ranges(client)
            if ref is not None and _same(state, ref) and _same(ranges, ref_ranges):
                same.append(f"client{k}")
                continue
            for key, v in state.items():
                tensors[f"client{k}/{key}"] = v.detach().contiguous().cpu()
            for key, v in ranges.items():
                tensors[f"client{k}.act/{key}"] = v
        opts = [_flatten(opt.state_dict(), f"opt{k}", tensors) for k, opt in enumerate(self.optimizers)]
        if ref is not None and self.best_state and _same(self.best_state, ref) and _same(self.best_ranges, ref_ranges):
            same.append("best")
        else:
            for key, v in self.best_state.items():
                tensors[f"best/{key}"] = v.contiguous().cpu()
            for key, v in self.best_ranges.items():
                tensors[f"best.act/{key}"] = v
        if self.fi:
            for key, v in ref.items():
                tensors[f"fused/{key}"] = v.detach().contiguous().cpu()
            for key, v in ref_ranges.items():
                tensors[f"fused.act/{key}"] = v
        tensors.update(_rng_state())
        meta = {"identity": self.identity, "round": self.round, "best": self.best, "since_best": self.since_best,
                "optimizers": opts, "log": self.log, "mode": self.mode, "clients": len(self.clients),
                "same_as_fused": same}
        write_checkpoint(self.state_dir, tensors, meta)

    def load(self) -> None:
        tensors, meta = read_checkpoint(self.state_dir, self.identity, self.mode)
        if meta["clients"] != len(self.clients):
            raise UsageError(f"the checkpoint in {self.state_dir} has {meta['clients']} clients, this recipe "
                             f"{len(self.clients)}", "resume with the same recipe, or delete that folder")

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

        if len(meta["optimizers"]) != len(self.optimizers):
            raise UsageError(f"the checkpoint in {self.state_dir} holds {len(meta['optimizers'])} optimizer states, "
                             f"this run {len(self.optimizers)}", "resume with the same recipe, or delete that folder")
        same = set(meta.get("same_as_fused", []))  # stored once, as the fused model

        def stored(name: str) -> str:
            return "fused" if name in same else name

        for k, client in enumerate(self.clients):
            load_state(client, part(f"{stored(f'client{k}')}/"))
            _set_act_ranges(client, part(f"{stored(f'client{k}')}.act/"), self.device)
        for k, opt in enumerate(self.optimizers):
            opt.load_state_dict(_unflatten(meta["optimizers"][k], tensors))
        if self.fi:
            load_state(self.fused, part("fused/"))
            _set_act_ranges(self.fused, part("fused.act/"), self.device)
        self.best_state = {k: v.to(self.device) for k, v in part(f"{stored('best')}/").items()}
        self.best_ranges = part(f"{stored('best')}.act/")
        self.best, self.since_best, self.log, self.round = meta["best"], meta["since_best"], meta["log"], meta["round"]
        _set_rng_state(tensors)

    def output_model(self, result: Result) -> nn.Module:
        """The selected (best validation) fused state in the package's own model object."""
        model = self.clients[0]
        load_state(model, result.best_state)
        _set_act_ranges(model, result.best_act_ranges, self.device)
        return model

    # ---- the whole run -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> Result:
        with cpu_threads(self.t.cpu_threads, self.clients[0], self.device):
            return self._run(resume)

    def _run(self, resume: bool) -> Result:
        start = time.perf_counter()
        if resume and has_checkpoint(self.state_dir):
            self.load()
        else:
            torch.manual_seed(self.t.seed)
            if torch.cuda.is_available():
                torch.cuda.manual_seed_all(self.t.seed)
        stopped = False
        resumed_from = self.round
        per_round = len(self.mine) * self.t.epochs_per_round * len(self.train_batches)
        bar = self.progress(total=self.t.rounds * per_round, initial=self.round * per_round, unit="step",
                            desc=f"{self.recipe.name}") if self.progress else None
        try:
            while self.round < self.t.rounds:
                if self.t.patience and self.since_best >= self.t.patience:
                    stopped = True
                    break
                entry = self.run_round(bar)
                self.save()
                if bar is not None:
                    _postfix(bar, entry)
                if self.on_round:
                    self.on_round(entry)
        finally:
            if bar is not None:
                bar.close()
        return Result(self.best_state, self.best_ranges, self.best, self.round, self.mode, str(self.device),
                      self.log, stopped, time.perf_counter() - start, resumed_from)
