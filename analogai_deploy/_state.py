"""Loading a state_dict that came from anywhere (a dict copy, a checkpoint file) into a model.

torch keeps each module's version in the `_metadata` of the state_dict it returns, and some modules check
theirs on load (torchvision's MNASNet refuses "version should be set to 1 or 2"). A plain dict has no
`_metadata`: it gets the model's own, which is right because the tensors came from this architecture.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
from torch import nn


def with_versions(model: nn.Module, state: Mapping[str, torch.Tensor]) -> OrderedDict:
    """`state` with the model's module versions attached where it carries none."""
    if getattr(state, "_metadata", None) is not None:
        return state  # type: ignore[return-value]
    out = OrderedDict(state)
    out._metadata = getattr(model.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    return out


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor]):
    """model.load_state_dict(state) (strict) for a state without torch's module versions."""
    return model.load_state_dict(with_versions(model, state))
