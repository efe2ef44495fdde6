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
        from aihwkit.simulator.configs import InferenceRPUConfig, TorchInferenceRPUConfig
    except Exception as exc:
        return {"aihwkit": False, "cpp": False, "torch": False, "error": f"{type(exc).__name__}: {exc}"}
    result: dict[str, object] = {"aihwkit": True}
    for key, cfg in (("cpp", InferenceRPUConfig), ("torch", TorchInferenceRPUConfig)):
        try:
            layer = AnalogLinear(4, 3, bias=True, rpu_config=cfg())
            layer.eval()
            with torch.no_grad():
                layer(torch.ones(2, 4))
            result[key] = True
        except Exception as exc:
            result[key] = False
            result[f"{key}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return result


def best_tile() -> str:
    """'cpp' when aihwkit's C++ tiles work here, else 'torch'; raises when aihwkit is unusable."""
    from .errors import OperationFailed

    support = tile_support()
    if support.get("cpp"):
        return "cpp"
    if support.get("torch"):
        return "torch"
    raise OperationFailed(f"aihwkit is not usable here: {support.get('error') or support}",
                          "install the tested pins: make install (torch 2.10.0 + aihwkit 1.1.0)")
