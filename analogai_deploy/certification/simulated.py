"""The package as certify simulates it: its mapping applied, and what of the mapping stays digital.

    mapped = map_digital(path, config, digital, placement, mapping, data_spec)   # both engines start here

`map_digital` is the mapping's digital side (analog/mapping.py): weights clipped, the calibration pass, the per-channel
input scales folded into the weights, learned input ranges read from the record, the outlier weights split off.
Each engine (simulators.py) puts `mapped.model` on its tiles, installs what stays digital on the model it
built (`Mapped.install`: the input-scaling pre-hooks, x / s before the DAC, and the outliers' forward hooks,
x @ R^T beside the tile) and sets each layer's static input range (`Mapped.input_ranges`) on its tiles.
certify's aihwkit engine and `analogai_deploy.to_aihwkit` build the same model, so aihwkit's own
`program_analog_weights()` / `drift_analog_weights(t)` on the latter run the chip the certificate measured.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..analog import mapping as mp
from ..analog import outliers as ol
from ..data.calibration import calibration_batches


@dataclass
class Mapped:
    """A digital model with a mapping's digital side applied, and what stays digital beside its tiles."""

    model: nn.Module  # weights clipped, input scales folded in, outliers split off
    clipped: dict[str, float] = field(default_factory=dict)  # layer -> fraction of its weights clipped
    calibration: mp.Calibration | None = None  # input scales and static input ranges (calibrated or learned)
    calibrated: dict[str, Any] | None = None  # what the calibration pass on data found (its summary)
    outliers: dict[str, Any] = field(default_factory=dict)  # layer -> its digital outlier weights [out, in]

    def install(self, model: nn.Module) -> list:
        """The digital parts on `model` (an engine's model, or the mapped model itself): x / s before each
        scaled layer's DAC and the outlier weights beside their tiles. Returns the hook handles."""
        handles = ol.install(model, self.outliers)  # forward hooks: they see x after the pre-hooks
        if self.calibration is not None:
            handles += mp.install(model, self.calibration)
        return handles

    @property
    def input_ranges(self) -> dict[str, float]:
        """Each layer's static input range (calibrated or learned), for every tile of the layer."""
        return {} if self.calibration is None else self.calibration.ranges


def map_digital(path: str | Path, config: dict[str, Any], digital: nn.Module, placement, mapping: mp.MappingConfig,
                data_spec: str | None) -> Mapped:
    """A copy of `digital` with the (complete) mapping's digital side applied to the placement's layers;
    calibration data as data/calibration.py picks it (`data_spec`: the certify dataset of images)."""
    m = mapping.complete()
    prepared = copy.deepcopy(digital)
    layers = mp.mapped_layers(prepared, placement)
    clipped = mp.clip_weights(prepared, m, layers)
    calibration = calibrated = None
    if m.needs_calibration:
        batches, info = calibration_batches(path, config, m, data_spec)
        calibration = mp.calibrate(prepared, batches, m, info, layers)
        mp.apply_input_scaling(prepared, calibration)
        calibrated = calibration.summary()
    if m.input_range == "learned":  # the ranges training learned, as config.json records them
        names = set(placement.names) if placement is not None else {n for n, _ in layers}
        calibration = mp.learned_ranges(m, names, calibration)
    # after the scales: the tiles' own weights (Linear and GPT-2 Conv1D layers, analog/outliers.py)
    outliers = ol.split(prepared, m, ol.split_layers(prepared, placement))
    return Mapped(prepared.eval(), clipped, calibration, calibrated, outliers)

