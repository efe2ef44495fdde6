"""`export --to aihwkit`: the tile state of `analogai_deploy.to_aihwkit(package, device)`, the chip certify simulates.

The model is certify's aihwkit engine's (certification.to_aihwkit: the package's placement, the device, the
package's mapping); the file is its `state_dict()` with aihwkit's pickled RPU config objects left out, so it
holds tensors, numbers and strings only and loads with `torch.load(..., weights_only=True)`. The RPU config
is the one `to_aihwkit` builds (devices.rpu_config) from the package's record, so it is never stored twice:

    model = ad.to_aihwkit(PKG, device="PCM")
    state = torch.load(f"{PKG}/model.aihwkit.pt", weights_only=True)
    model.load_state_dict(state, load_rpu_config=False, strict_rpu_config_check=False)

A package certified on `device` is exported with its certificate's settings (the IO and mapping that ran,
overrides included), so the file is the chip the certificate measured; otherwise with the package's mapping
on `device`, as a plain `certify --device DEVICE` would run it.

The hooks the mapping puts beside the tiles (input scales, digital outlier weights) are not tensors of the
state_dict: they come with the model `to_aihwkit` returns (docs/export.md).
"""
from __future__ import annotations

import io
import json
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


def certified(path: Path, device: str):
    """(the CertifyConfig of the package's certificate when it is for `device`, else None; a warning or None)."""
    from ..certification import CertifyConfig
    from ..hardware.devices import canonical_device
    from ..package import CERTIFICATE

    file = Path(path) / CERTIFICATE
    if not file.is_file():
        return None, None
    cert = json.loads(file.read_text(encoding="utf-8"))
    kind = (cert.get("device") or {}).get("kind")
    if kind != canonical_device(device):
        return None, (f"the package's certificate is for {kind}: this {canonical_device(device)} model runs the "
                      "package's mapping with that device's defaults, not a certified chip")
    try:  # a custom device's file is inside the settings too: the certified custom chip
        return CertifyConfig.from_dict({**cert["settings"], "engine": "aihwkit"}), None
    except UsageError as exc:  # a certificate of an older toolkit whose settings this one does not take
        return None, (f"the certificate's settings are not readable here ({exc.message}): this model runs the "
                      f"package's mapping on {kind}, certify again to export the certified chip")


def checkpoint(path: Path, device: str) -> tuple[bytes, dict[str, Any], dict[str, Any], list[str]]:
    """(checkpoint bytes, a JSON-able record of how it was made, the package's config.json as loaded, warnings)
    for the package at `path` on `device`."""
    import torch

    from ..certification import resolve, settings_config
    from ..certification.bench import chip
    from ..hardware.devices import describe

    config, warning = certified(path, device)
    if config is None and device.lower() == "custom":
        raise UsageError("export `to=aihwkit` takes a named device, or custom when the package is certified on it "
                         "(the YAML file is not part of the package)",
                         "in Python: ad.to_aihwkit(PKG, device='custom', device_file='my.yaml')")
    # the certificate's settings name its device; without them, the device asked for
    run = resolve(path, config if config is not None else settings_config(device=device))
    cfg, tile, rpu = run.config, run.tile, run.rpu
    analog, simulated, pkg = chip(path, cfg, rpu)
    buf = io.BytesIO()
    torch.save(tensors_only(analog.state_dict()), buf)
    record = {"file": FILE, "device": cfg.device.label, "tile": tile, "rpu_config": type(rpu).__name__,
              "simulation": describe(cfg.device, rpu, tile), "mapping": cfg.mapping.to_dict(),
              "analog_layers": len(simulated), "weights_only": True, "certified": config is not None,
              "placement_sha256": pkg.placement.sha256, "simulated": simulated}
    return buf.getvalue(), record, pkg.config, [warning] if warning else []
