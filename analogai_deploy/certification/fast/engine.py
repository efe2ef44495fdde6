"""The fast engine's driver: which packages and devices it simulates (and the `auto` choice), every
placement entry on its tiles, and FastModel, the model certify programs, drifts and runs."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ...analog.placement import placed
from ...errors import UsageError
from .layer import FastLayer


def check_supported(device) -> None:
    """Refuse the settings the fast engine does not simulate (those of aihwkit's C++ tiles)."""
    need = device.needs_cpp() or ("`tile=cpp`" if device.tile == "cpp" else "")
    if need:
        raise UsageError(f"the fast engine simulates aihwkit's PyTorch tile; {need} needs the C++ tile",
                         "use `engine=aihwkit` for this setting")


def choose(device, rpu, placement) -> tuple[str, str]:
    """The engine certify runs when none is named, and why: the fast engine (the faster one) where it is
    validated against aihwkit, i.e. aihwkit's PyTorch tile settings, a PCM noise model the native pass
    simulates (tests/test_pcm.py, the agreement tests), ABS_MAX or no noise management and layer kinds
    it maps; else the aihwkit engine, saying which condition failed."""
    from aihwkit.simulator.parameters.enums import NoiseManagementType

    from ...hardware import pcm

    need = device.needs_cpp()
    why = ""
    if need:
        why = f"{need} needs aihwkit's C++ tile"
    elif device.tile != "auto":
        why = f"--tile {device.tile} names aihwkit's tiles"
    elif not pcm.supported(rpu.noise_model):
        why = f"the fast engine is validated on PCM noise models, not {type(rpu.noise_model).__name__}"
    elif rpu.forward.noise_management not in (NoiseManagementType.ABS_MAX, NoiseManagementType.NONE):
        why = f"the fast engine implements ABS_MAX noise management, not {rpu.forward.noise_management.name}"
    elif placement is not None and any(e.kind == "custom" for e in placement.analog):
        why = "a layer added with register_layer has no fast-engine mapping"
    if why:
        return "aihwkit", f"default; not fast: {why}"
    return "fast", "default: the fastest engine validated for this device and package"



class _FastLinear(nn.Linear):
    def forward(self, x):
        return self._fast.linear(x)


class _FastConv:
    def forward(self, x):
        return self._fast.conv_forward(x)


class _FastConv1d(_FastConv, nn.Conv1d):
    pass


class _FastConv2d(_FastConv, nn.Conv2d):
    pass


class _FastConv3d(_FastConv, nn.Conv3d):
    pass


_FAST_CLASSES = {nn.Linear: _FastLinear, nn.Conv1d: _FastConv1d, nn.Conv2d: _FastConv2d, nn.Conv3d: _FastConv3d}


def _fast_linear(weight: torch.Tensor, bias: torch.Tensor | None, rpu) -> nn.Module:
    """A new linear layer y = x W^T + b on the fast engine's tiles (tiles._linear's counterpart)."""
    from ...analog.tiles import digital_linear

    layer = digital_linear(weight, bias)
    layer.__class__ = _FastLinear
    layer._fast = FastLayer(layer, rpu)
    return layer


def _on_tiles(entry, module: nn.Module, rpu) -> tuple[nn.Module, dict[str, FastLayer]]:
    """One placement entry on the fast engine's tiles, mapped as tiles._replacement maps it on aihwkit's:
    (the module that takes its place, {parameter name of the placement's matrices: its FastLayer})."""
    from ...analog.tiles import AnalogAttention

    if entry.kind in ("linear", "conv1d", "conv2d", "conv3d"):
        module.__class__ = _FAST_CLASSES[type(module)]
        module._fast = FastLayer(module, rpu, getattr(module, "groups", 1))
        return module, {"weight": module._fast}
    if entry.kind == "hf_conv1d":  # GPT-2's Conv1D, y = x @ W + b with W [in, out]: a linear layer with W^T
        new = _fast_linear(module.weight.detach().t(), None if module.bias is None else module.bias.detach(), rpu)
        return new, {"weight": new._fast}
    if entry.kind == "attention":  # the projections on tiles, the attention kernel itself digital
        new = AnalogAttention(module, lambda w, b: _fast_linear(w, b, rpu)).eval()
        names = ("in_proj",) if new.packed else ("q_proj", "k_proj", "v_proj")
        layers = {f"{n}_weight": getattr(new, n)._fast for n in names}
        return new, {**layers, "out_proj.weight": new.out_proj._fast}
    raise UsageError(f"the fast engine has no mapping for layer {entry.name!r} ({entry.type}, added with "
                     "register_layer)", "use `engine=aihwkit`")


class FastModel(nn.Module):
    """A copy of the digital model with the placement's analog layers on the fast engine's tiles."""

    def __init__(self, digital: nn.Module, rpu, exact: bool = False, placement=None):
        """`placement` (analog/placement.py, config.json["placement"]): the layers to simulate, read, not
        derived; without one, the default conversion's placement of `digital` (as bench.simulate)."""
        super().__init__()
        from ...analog.placement import plan
        from ...analog.tiles import set_module

        self.model = copy.deepcopy(digital).eval()
        self.placement = placement if placement is not None else plan(self.model)
        self.layers: list[FastLayer] = []
        self.simulated: list[str] = []  # the placement layers on tiles, in placement order
        for entry in self.placement.analog:
            module = placed(self.model, entry)
            new, layers = _on_tiles(entry, module, rpu)
            for param, layer in layers.items():  # the record's tile matrices are the ones built here
                rows, cols = entry.matrices.get(param, [None, None])
                got = layer.shape[0] // layer.groups, math.prod(layer.shape[1:])
                if (rows, cols) != got:
                    raise UsageError(f"{entry.name}: the placement maps a {rows}x{cols} {param} matrix per group, "
                                     f"the layer has {got[0]}x{got[1]}", "re-convert the package (its placement is stale)")
                layer.exact = exact
                self.layers.append(layer)
            if new is not module:
                if entry.name:
                    set_module(self.model, entry.name, new)
                else:
                    self.model = new
            self.simulated.append(entry.name)

    def set_input_ranges(self, ranges: dict[str, float]) -> None:
        """Static input ranges (the mapping's calibrated or learned ones) on every tile of each named layer
        (an attention's projections: each of them)."""
        for name, r in ranges.items():
            for sub in self.model.get_submodule(name).modules():
                if hasattr(sub, "_fast"):
                    sub._fast.input_range = r

    @torch.no_grad()
    def program(self) -> None:
        for layer in self.layers:
            layer.program()

    @torch.no_grad()
    def drift(self, seconds: float) -> None:
        for layer in self.layers:
            layer.drift(seconds)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def conversion(self) -> dict[str, Any]:
        """The certificate's conversion block, counted as tiles.conversion counts aihwkit's."""
        digital: dict[str, int] = {}
        for e in self.placement.digital:
            digital[e.type] = digital.get(e.type, 0) + 1
        return {"analog_layers": len(self.simulated), "tiles": sum(len(layer.tiles) for layer in self.layers),
                "analog_weights": sum(self.placement.entry(n).tile_weights for n in self.simulated),
                "digital_modules": digital, "total_params": self.placement.total_params}
