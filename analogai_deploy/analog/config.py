"""The conversion settings: which layers go analog and how their noise is modelled."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .._config import StrictConfig
from ..errors import UsageError


def slicing_factor(weight_bits: int, device_bits: int) -> float:
    """Noise scale of a weight stored in `weight_bits / device_bits` device slices.

    c = sqrt(sum_i 2^(2*d*i)) / sum_i 2^(d*i) over the slices; 0.7776 for 8-bit weights on 2-bit devices.
    """
    slices = max(1, math.ceil(weight_bits / device_bits))
    num = math.sqrt(sum(2 ** (2 * device_bits * i) for i in range(slices)))
    den = sum(2 ** (device_bits * i) for i in range(slices))
    return num / den


@dataclass(frozen=True)
class AnalogConfig(StrictConfig):
    """How a model is made analog-aware.

    weight_bits / device_bits: a weight is stored in weight_bits/device_bits device slices; this sets the
        noise scale c (DESIGN: s = c * sigma * max|W|).
    sigma: the default relative weight-noise level of the layers (0 = noise off until a recipe sets it).
    act_noise: relative Gaussian noise on each analog layer's output (0 = off).
    include / exclude: fnmatch patterns on module names (e.g. "features.0", "*.fc"); exclude wins.
    exclude_types: class names kept digital (e.g. "Conv2d").
    keep_first_last: keep the first and the last convertible layer digital.
    """

    weight_bits: int = 8
    device_bits: int = 2
    sigma: float = 0.0
    act_noise: float = 0.0
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    exclude_types: list[str] = field(default_factory=list)
    keep_first_last: bool = False

    def __post_init__(self):
        if not 1 <= self.weight_bits <= 32:
            raise UsageError(f"weight_bits must be in 1..32, got {self.weight_bits}")
        if not 1 <= self.device_bits <= self.weight_bits:
            raise UsageError(f"device_bits must be in 1..weight_bits ({self.weight_bits}), got {self.device_bits}")
        if self.sigma < 0 or self.act_noise < 0:
            raise UsageError("sigma and act_noise must be >= 0")

    @property
    def noise_scale(self) -> float:
        return slicing_factor(self.weight_bits, self.device_bits)
