"""The recipe's `noise:` and `io:` sections: the hardware noise model recovery trains with (hardware/noise.py,
wired by hardware_noise.py). Absent from a recipe's dict at their defaults, the seed's noise model."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .._config import ChoiceConfig, StrictConfig
from ..errors import UsageError
from ..hardware.clipping import Clip
from ..hardware.noise import Model, Scale
from ..metrics import DEFAULT_TIMES

#: the times after programming noise.model=device trains for: certify's default grid
#: noise.scale's words before it took the mapping's (weight_scaling): a user's recipe file still loads
OLD_SCALE = {"tensor": "tile", "channel": "column"}


@dataclass(frozen=True)
class NoiseModelConfig(ChoiceConfig):
    """The training weight-noise model (hardware/noise.py); the defaults are the seed's.

    scale: the mapping's weight_scaling words: tile (s from max|W| of the whole layer, the seed) or column
      (max|W| per output channel, one weight scale per crossbar column); tensor / channel, the words
      recipes used before, are read as tile / column. model: gaussian (the seed) or pcm (aihwkit
      PCMLikeNoiseModel's programming-noise polynomial in the normalised conductance). MSNAT's sigmas
      scale either; or device (certify's whole PCM device: programming, drift with its compensation and read
      noise at a time after programming drawn from `times` per layer and pass; sigma 0.056 at c 0.7776 is the
      device itself, other sigmas scale its deviation). clip / clip_value: clip the weights in the forward pass (none, fixed: |w| <= value,
      layer_std / channel_std: value std per layer / output channel); certify then clips the same way.
    outliers / outlier_std: digital keeps each Linear layer's tile weights beyond outlier_std std of their
      output column off the tile, computed digitally beside it (the mapping's outliers; certify then does the
      same); none keeps every weight on the tiles.
    input_scaling: none (the seed) or package: train each linear / convolution layer as certify maps it with
      the package's per-channel input scaling (config.json mapping; W_:j * s_j on the tile, x_j / s_j before
      it), s calibrated once before training exactly as certify calibrates it.
    clip_when: forward (the clip acts on the weights each forward pass uses; certify then clips the same way)
      or step (the weights themselves are clipped after every optimizer step, as aihwkit-lightning's
      clip_weights; the package's weights then hold the bound and certify programs them as they are).
    slicing_factor: c in s = c * sigma * wmax; None = the package's (its weight / device bits). 1 makes
      sigma the noise std relative to wmax, as aihwkit(-lightning)'s weight modifiers define it.
    """

    _choices = {"scale": "noise.scale"}

    scale: Scale = "tile"
    model: Model = "gaussian"
    clip: Clip = "none"
    clip_value: float = 3.0
    outliers: Literal["none", "digital"] = "none"
    outlier_std: float = 3.0
    input_scaling: Literal["none", "package"] = "none"
    times: list[str] = field(default_factory=lambda: list(DEFAULT_TIMES))
    clip_when: Literal["forward", "step"] = "forward"
    slicing_factor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        # absent at their defaults: recipes written before them keep their hash
        for key, default in (("input_scaling", "none"), ("clip_when", "forward"), ("slicing_factor", None)):
            if d[key] == default:
                del d[key]
        if d["outliers"] == "none" and d["outlier_std"] == 3.0:
            del d["outliers"], d["outlier_std"]
        if d["times"] == list(DEFAULT_TIMES):
            del d["times"]
        return d

    @property
    def seconds(self) -> tuple[float, ...]:
        """`times` in seconds after programming (the `device` model's draws)."""
        from ..metrics import parse_times

        return tuple(s for _, s in parse_times(self.times))

    @classmethod
    def spelling(cls, name: str, value: Any) -> Any:
        return OLD_SCALE.get(value, value)

    def __post_init__(self):
        self.set_choices()
        if self.clip_value <= 0:
            raise UsageError(f"noise.clip_value must be > 0, got {self.clip_value}")
        if self.outlier_std <= 0:
            raise UsageError(f"noise.outlier_std must be > 0 (std multiples), got {self.outlier_std}")
        if self.slicing_factor is not None and self.slicing_factor <= 0:
            raise UsageError(f"noise.slicing_factor must be > 0 (or null: the package's), got {self.slicing_factor}")
        if self.clip_when == "step" and self.clip == "none":
            raise UsageError("noise.clip_when=step clips the weights after each step, but noise.clip is none",
                             "set noise.clip (e.g. channel_std) or drop noise.clip_when")
        self.seconds  # bad times are refused here, with certify's message


@dataclass(frozen=True)
class InputRangeConfig(StrictConfig):
    """The DAC's input range in training (io.input_range; aihwkit-lightning's pre_post.input_range names).

    mode: dynamic (each input vector scaled by its own abs-max, aihwkit's ABS_MAX noise management) or learned:
      one static range r per layer, a trained parameter. Its first init_from_data training batches set it to
      the running mean of init_std_alpha x the std of the layer's inputs (init_value before any); then it learns:
      inputs beyond +-r clip (no gradient), r gets the clipped inputs' gradient times r, plus decay x r while
      more than input_min_percentage of the inputs lie inside (it shrinks until about that share fits).
      Recover records each layer's r in config.json's mapping (input_range: learned), and certify uses them.
    """

    mode: Literal["dynamic", "learned"] = "dynamic"
    init_value: float = 3.0
    init_from_data: int = 500
    init_std_alpha: float = 18.0
    decay: float = 0.01
    input_min_percentage: float = 0.95

    def __post_init__(self):
        if self.init_value <= 0 or self.init_std_alpha <= 0 or self.decay < 0 or self.init_from_data < 0:
            raise UsageError("io.input_range: init_value and init_std_alpha must be > 0, decay and init_from_data >= 0")
        if not 0.0 < self.input_min_percentage <= 1.0:
            raise UsageError(f"io.input_range.input_min_percentage must be in (0, 1], got {self.input_min_percentage}")


@dataclass(frozen=True)
class TrainIOConfig(StrictConfig):
    """The tile periphery in training (0 = off): dac_bits / adc_bits quantisation with straight-through
    gradients, out_noise Gaussian noise on every output (in units of input max x weight max, as aihwkit's
    out_noise), out_bound the ADC's range. Set them to certify's device (aihwkit: 7 / 9 bits, 0.06, 12).
    input_range: the input max the DAC divides by: dynamic per input vector, or learned per layer."""

    out_noise: float = 0.0
    dac_bits: int = 0
    adc_bits: int = 0
    out_bound: float = 12.0
    input_range: InputRangeConfig = field(default_factory=InputRangeConfig)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if self.input_range == InputRangeConfig():  # absent at its default: older recipes keep their hash
            del d["input_range"]
        return d

    def __post_init__(self):
        if self.out_noise < 0:
            raise UsageError(f"io.out_noise must be >= 0, got {self.out_noise}")
        for name in ("dac_bits", "adc_bits"):
            if not 0 <= getattr(self, name) <= 24:
                raise UsageError(f"io.{name} must be in 0..24 (0 = no quantisation), got {getattr(self, name)}")
        if self.out_bound <= 0:
            raise UsageError(f"io.out_bound must be > 0, got {self.out_bound}")
