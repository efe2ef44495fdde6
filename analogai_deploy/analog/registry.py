"""Which digital layer becomes which analog layer. Users extend it with `register_layer`."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from . import layers

_LAYERS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: layers.AnalogLinear,
    nn.Conv1d: layers.AnalogConv1d,
    nn.Conv2d: layers.AnalogConv2d,
    nn.Conv3d: layers.AnalogConv3d,
    nn.MultiheadAttention: layers.AnalogMultiheadAttention,
    # nn.MultiheadAttention's out_proj: a Linear subclass that the attention kernel reads directly,
    # so it is converted as part of its parent (see AnalogMultiheadAttention).
}
_HF: list = []  # [(Conv1D, AnalogHFConv1D) or None] once looked up: importing transformers costs ~1.5 s


def hf_conv1d(look_up: bool = True):
    """(transformers' Conv1D, its analog class), registered on first need; None without transformers, or
    before the first need when not `look_up` (importing transformers costs ~1.5 s)."""
    if not _HF and not look_up:
        return None
    if not _HF:
        _HF.append(layers.hf_conv1d_class())
        if _HF[0] is not None:
            _LAYERS.setdefault(_HF[0][0], _HF[0][1])
    return _HF[0]


def register_layer(torch_cls: type[nn.Module], analog_cls: type[nn.Module]) -> None:
    """Convert every module of exactly `torch_cls` into `analog_cls`.

    `analog_cls` must subclass both `torch_cls` and `AnalogLayer` (so it keeps the digital parameters
    and its forward reads `self.analog`).
    """
    if not (issubclass(analog_cls, torch_cls) and issubclass(analog_cls, layers.AnalogLayer)):
        raise TypeError(f"{analog_cls.__name__} must subclass {torch_cls.__name__} and AnalogLayer")
    _LAYERS[torch_cls] = analog_cls


@contextmanager
def registered(torch_cls: type[nn.Module], analog_cls: type[nn.Module]) -> Iterator[None]:
    """`register_layer` inside the block only: afterwards the registry is as it was."""
    before = _LAYERS.get(torch_cls)
    register_layer(torch_cls, analog_cls)
    try:
        yield
    finally:
        if before is None:
            _LAYERS.pop(torch_cls, None)
        else:
            _LAYERS[torch_cls] = before


def registered_names() -> set[str]:
    """The class names of every digital type the registry converts."""
    return {cls.__name__ for cls in _LAYERS}


def analog_class_for(module: nn.Module) -> type[nn.Module] | None:
    """The analog class for this module's exact type (subclasses are not guessed: they may change forward)."""
    kind = type(module)
    if kind not in _LAYERS and kind.__module__.startswith("transformers") and not _HF:
        hf_conv1d()  # a transformers model: its GPT-2 style Conv1D maps too
    return _LAYERS.get(kind)

