"""`export --to aihwkit`: the package's model converted with aihwkit, saved as an aihwkit checkpoint.

The checkpoint is `torch.save(analog_model.state_dict())`: aihwkit's tile state (including its
RPU config) is PICKLED, so the file is only for trusted use. The package's own weights stay in
model.safetensors; this file is a convenience for people who continue in aihwkit. docs/export.md
shows how to load it (torch's loader with weights_only=False, then load_state_dict(..., load_rpu_config=True)
on the model converted with `rpu_config(device)` from this module).
"""
from __future__ import annotations

import io
from typing import Any

from torch import nn

from ..errors import unknown

FILE = "model.aihwkit.pt"
PICKLE_WARNING = (f"{FILE} is a pickled torch checkpoint (aihwkit's tile state cannot be stored otherwise): "
                  "load it only if you trust where it came from; model.safetensors stays the safe copy")


def _noise_models() -> dict[str, Any]:
    from aihwkit.inference import PCMLikeNoiseModel, ReRamCMONoiseModel, ReRamWan2022NoiseModel

    return {
        "PCM": lambda: PCMLikeNoiseModel(g_max=25.0),
        "ReRAM-Wan2022": ReRamWan2022NoiseModel,
        "ReRAM-CMO": ReRamCMONoiseModel,
    }


DEVICES = ("PCM", "ReRAM-Wan2022", "ReRAM-CMO")


def rpu_config(device: str = "PCM", tile: str | None = None, w_noise: float | None = None):
    """The inference RPU config for `device` on the tiles that work here (C++ if possible)."""
    from aihwkit.inference import GlobalDriftCompensation
    from aihwkit.simulator.configs import InferenceRPUConfig, TorchInferenceRPUConfig

    from ..aihwkit_probe import best_tile

    models = _noise_models()
    if device not in models:
        raise unknown("aihwkit device", device, models)
    tile = tile or best_tile()
    config = InferenceRPUConfig() if tile == "cpp" else TorchInferenceRPUConfig()
    config.noise_model = models[device]()
    config.drift_compensation = GlobalDriftCompensation()
    if w_noise and tile == "cpp":  # only the C++ tiles take forward weight noise (the seed's n_w)
        from aihwkit.simulator.parameters.enums import WeightNoiseType

        config.forward.w_noise_type = WeightNoiseType.ADDITIVE_CONSTANT
        config.forward.w_noise = float(w_noise)
    return config


def recipe_w_noise(config: dict[str, Any]) -> float | None:
    resolved = (config.get("recipe") or {}).get("resolved") or {}
    value = ((resolved.get("inference") or {}).get("platform") or {}).get("aihwkit", {}).get("n_w")
    return float(value) if value is not None else None


def checkpoint(digital: nn.Module, device: str, w_noise: float | None, placement) -> tuple[bytes, dict[str, Any]]:
    """(checkpoint bytes, a JSON-able record of how it was made). Exactly the placement's layers go on tiles."""
    import torch

    from ..aihwkit_probe import best_tile
    from ..certification.tiles import to_aihwkit

    tile = best_tile()
    rpu = rpu_config(device, tile, w_noise)
    analog, simulated = to_aihwkit(digital, placement, rpu)
    analog.eval()
    buf = io.BytesIO()
    torch.save(analog.state_dict(), buf)
    layers = len(list(analog.analog_layers())) if hasattr(analog, "analog_layers") else None
    record = {"file": FILE, "device": device, "tile": tile, "rpu_config": type(rpu).__name__,
              "w_noise": w_noise if tile == "cpp" else None, "analog_layers": layers, "pickled": True,
              "placement_sha256": placement.sha256, "simulated": simulated}
    return buf.getvalue(), record
