"""The resumable checkpoint of a recover run: OUTPUT.partial/ holds the last finished round.

Checkpoints are safetensors + JSON (no pickle): state-RRRR.safetensors holds the tensors (models, optimizer
states, RNG states), state.json the rest and names that tensors file; it is the commit point, written last
(atomic replace), so a crash at any point leaves a state.json naming a complete tensors file. A resume is
refused when the checkpoint belongs to another run (package, recipe, data or mode), and a folder is
continued (`resume`) or discarded (`restart`) on request only.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import OperationFailed, UsageError, no_room

CHECKPOINT_META = "state.json"  # the commit point: it names the tensors file of the last finished round
LOG = "train_log.jsonl"


def state_dir_for(output: Path) -> Path:
    return output.parent / f"{output.name}.partial"


# ---- nested optimizer state <-> flat safetensors + JSON ---------------------------------------------

def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().contiguous().cpu()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [unflatten(v, tensors) for v in obj]
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
                             "resume with the same package, recipe, overrides and data, or pass `restart=True` to "
                             "discard it")
    if meta["mode"] != mode:
        raise UsageError(f"the checkpoint in {state_dir} was made in {meta['mode']} mode, this run is {mode}",
                         f"resume with training.mode={meta['mode']}, or pass `restart=True` to discard it")
    return load_file(str(state_dir / meta["tensors"])), meta


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


def rng_state() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda{i}"] = s
    return out


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bitwise equal state dicts (same keys, dtypes, values)."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k].detach().cpu(), b[k].detach().cpu()) for k in a)


class Interrupted(OperationFailed):
    """Ctrl-C during training; the checkpoint of the last finished round is kept."""

    exit_code = 130


def interrupted(state_dir: Path, rounds: int) -> Interrupted:
    """What Ctrl-C leaves: the checkpoint on disk (read back, so the message names only what exists)."""
    if not has_checkpoint(state_dir):  # stopped inside round 1: nothing was written
        return Interrupted(f"interrupted in round 1 of {rounds}; no round finished, so nothing is checkpointed",
                           "rerun the same command to start again")
    done = json.loads((state_dir / CHECKPOINT_META).read_text(encoding="utf-8"))["round"]
    return Interrupted(f"interrupted; {done} of {rounds} rounds are checkpointed in {state_dir}",
                       "rerun the same command with `resume=True` to continue")


def check_folder(state_dir: Path, resume: bool, restart: bool) -> None:
    """A checkpoint is hours of training: continue it or discard it, on request only."""
    if resume and restart:
        raise UsageError("`resume=True` and `restart=True` contradict each other", "pass one of them")
    if state_dir.is_symlink() or (state_dir.exists() and not state_dir.is_dir()):
        raise UsageError(f"{state_dir} exists and is not a checkpoint folder", "move it away, or write elsewhere (-o)")
    if not state_dir.is_dir():
        return
    foreign = foreign_checkpoint_entries(state_dir)
    if foreign:
        raise UsageError(f"{state_dir} holds {', '.join(foreign[:3])}, which training did not write",
                         "move it out of the folder, or write elsewhere (-o)")
    if not resume and not restart and any(state_dir.iterdir()):
        try:
            done = json.loads((state_dir / CHECKPOINT_META).read_text(encoding="utf-8")).get("round")
        except (OSError, ValueError, AttributeError):
            done = None
        what = f"a checkpoint of {done} finished round{'s' if done != 1 else ''}" if isinstance(done, int) else \
            "an unfinished checkpoint"
        raise UsageError(f"{state_dir} holds {what} from an earlier run",
                         "pass `resume=True` to continue it, or `restart=True` to discard it and start over")
