"""Which aihwkit tiles run in this environment.

The aihwkit 1.1.0 wheel's C++ tiles (InferenceRPUConfig) work with torch 2.10/2.11 but fail on newer
torch ("weights must be a CPU tensor") while its pure-PyTorch tiles keep working. Probe once, cache.
"""
from __future__ import annotations

import functools


@functools.cache
def tile_support() -> dict[str, object]:
    try:
        import torch
        from aihwkit.nn import AnalogLinear

        from .devices import DeviceConfig, rpu_config
    except Exception as exc:
        return {"aihwkit": False, "cpp": False, "torch": False, "error": f"{type(exc).__name__}: {exc}"}
    result: dict[str, object] = {"aihwkit": True}
    for key in ("cpp", "torch"):
        try:
            layer = AnalogLinear(4, 3, bias=True, rpu_config=rpu_config(DeviceConfig(), key))
            layer.eval()
            with torch.no_grad():
                layer(torch.ones(2, 4))
            result[key] = True
        except Exception as exc:
            result[key] = False
            result[f"{key}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return result

