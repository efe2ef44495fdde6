"""`export --to aihwkit`: the tile state of `analogai_deploy.to_aihwkit(package, device)`, the chip certify simulates.

The model is certify's aihwkit engine's (certification.to_aihwkit: the package's placement, the device, the
package's mapping); the file is its `state_dict()` with aihwkit's pickled RPU config objects left out, so it
holds tensors, numbers and strings only and loads with `torch.load(..., weights_only=True)`. The RPU config
is the one `to_aihwkit` builds (devices.rpu_config) from the package's record, so it is never stored twice:

    model = ad.to_aihwkit(PKG, device="PCM")
    state = torch.load(f"{PKG}/model.aihwkit.pt", weights_only=True)
    model.load_state_dict(state, load_rpu_config=False, strict_rpu_config_check=False)

The hooks the mapping puts beside the tiles (input scales, digital outlier weights) are not tensors of the
state_dict: they come with the model `to_aihwkit` returns (docs/export.md).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..errors import UsageError

FILE = "model.aihwkit.pt"
#: where aihwkit keeps a tile's state (its RPU config object among tensors) in a state_dict
_TILE_STATE = "analog_tile_state"


def tensors_only(state: dict[str, Any]) -> dict[str, Any]:
    """`state` with every tile state's RPU config object set to None (the only non-tensor, non-plain value)."""
    out = {}
    for key, value in state.items():
        if key.endswith(_TILE_STATE) and isinstance(value, dict):
            value = {**value, "rpu_config": None}
        out[key] = value
    return out


def checkpoint(path: Path, device: str) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """(checkpoint bytes, a JSON-able record of how it was made, the package's config.json as loaded) for the
    package at `path` on `device`."""
    import torch

    from ..certification import _chip, resolve
    from ..certification.devices import describe

    if device.lower() == "custom":
        raise UsageError("export --to aihwkit takes a named device, not custom (its YAML file is not part of the "
                         "package)", "in Python: ad.to_aihwkit(PKG, device='custom', device_file='my.yaml')")
    _, cfg, tile, rpu, _ = resolve(path, device, engine="aihwkit")
    analog, simulated, pkg = _chip(path, cfg, rpu)
    buf = io.BytesIO()
    torch.save(tensors_only(analog.state_dict()), buf)
    record = {"file": FILE, "device": cfg.device.label, "tile": tile, "rpu_config": type(rpu).__name__,
              "simulation": describe(cfg.device, rpu, tile), "mapping": cfg.mapping.to_dict(),
              "analog_layers": len(simulated), "weights_only": True,
              "placement_sha256": pkg.placement.sha256, "simulated": simulated}
    return buf.getvalue(), record, pkg.config
