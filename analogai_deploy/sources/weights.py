"""Loading a user's local checkpoint into a built model: safetensors, or a torch file read without pickle."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError


def load_state(path: str) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"weights file not found: {path}", "pass `weights` with an existing .safetensors/.pt file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickled full model or a corrupt file
        raise UsageError(
            f"cannot read {path} safely: {type(exc).__name__}",
            "save a state_dict (torch.save(model.state_dict(), f)) or a .safetensors file",
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"{path} does not hold a state_dict")
    return state


def apply(model: nn.Module, path: str) -> None:
    state = load_state(path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise UsageError(f"weights in {path} do not fit the model: {str(exc).splitlines()[1].strip()}",
                         "check `num_classes` and the architecture name") from None
    if missing or unexpected:
        raise UsageError(
            f"weights in {path} do not fit the model: {len(missing)} missing, {len(unexpected)} unexpected keys "
            f"(e.g. {(missing or unexpected)[0]!r})",
            "check `num_classes` and the architecture name",
        )
