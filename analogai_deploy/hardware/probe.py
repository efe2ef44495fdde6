"""Which aihwkit tiles run in this environment, and so which one a device config gets (`choose_tile`).

The aihwkit 1.1.0 wheel's C++ tiles (InferenceRPUConfig) work with torch 2.10/2.11 but fail on newer
torch ("weights must be a CPU tensor") while its pure-PyTorch tiles keep working. Probe once, cache.
"""
from __future__ import annotations

import functools

from ..errors import OperationFailed, UsageError
from .devices import DeviceConfig, rpu_config


@functools.cache
def tile_support() -> dict[str, object]:
    try:
        import torch
        from aihwkit.nn import AnalogLinear
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


def choose_tile(config: DeviceConfig) -> str:
    """The tile kind that will run `config`.

    auto: the PyTorch tile, whose every random draw follows torch's seed (same seed, same certificate),
    unless a setting needs the C++ tile. aihwkit's C++ tiles draw their forward noise from an internal
    generator that cannot be seeded, so their certificates vary slightly from run to run.
    """
    support = tile_support()
    if not support.get("aihwkit"):
        raise OperationFailed(f"aihwkit is not usable here: {support.get('error')}",
                              "install the tested pins: make install (torch 2.10.0 + aihwkit 1.1.0)")
    need = config.needs_cpp()
    tile = config.tile
    if tile == "auto":
        tile = "cpp" if need or not support.get("torch") else "torch"
    if tile == "torch" and need:
        raise UsageError(f"{need} needs aihwkit's C++ tiles; the PyTorch tile cannot simulate it",
                         "drop `tile=torch` (auto picks the C++ tile for it) or leave that setting out")
    if not support.get(tile):
        why = support.get(f"{tile}_error", "not available")
        fix = ("the C++ tiles need an aihwkit binary built for this torch (torch 2.10/2.11 with aihwkit 1.1.0)"
               if tile == "cpp" else "reinstall aihwkit")
        if need:
            raise OperationFailed(f"{need} needs aihwkit's C++ tiles, which do not run here ({why})", fix)
        raise OperationFailed(f"aihwkit's {tile} tiles do not run here ({why})", fix)
    return tile
