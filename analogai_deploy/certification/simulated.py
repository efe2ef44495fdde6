"""The package as certify simulates it: its mapping applied, its placement on tiles, the mapping's digital parts.

    mapped = map_digital(path, config, digital, placement, mapping, data_spec)   # both engines start here
    analog, simulated = on_tiles(mapped, placement, rpu)                          # the aihwkit engine's model

`map_digital` is the mapping's digital side (mapping.py): weights clipped, the calibration pass, the per-channel
input scales folded into the weights, learned input ranges read from the record, the outlier weights split off. `on_tiles` puts the result on aihwkit's
tiles (tiles.py) and installs what stays digital on the model it returns: the input-scaling pre-hooks
(x / s before the DAC), the outliers' forward hooks (x @ R^T beside the tile) and each tile's static input
range. certify's aihwkit engine and `analogai_deploy.to_aihwkit` both build their model here, so aihwkit's own
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

    def install(self, model: nn.Module, fast: bool = False) -> list:
        """The digital parts on `model` (the aihwkit model or the fast engine's): x / s before each scaled
        layer's DAC, the outlier weights beside their tiles, and every tile's static input range. Returns
        the hook handles."""
        handles = ol.install(model, self.outliers)  # forward hooks: they see x after the pre-hooks
        cal = self.calibration
        if cal is None:
            return handles
        handles += mp.install(model, cal)
        for name, r in cal.ranges.items():
            mod = model.get_submodule(name)
            if fast:  # every tile of the layer (an attention's projections: each of them)
                for sub in mod.modules():
                    if hasattr(sub, "_fast"):
                        sub._fast.input_range = r
                continue
            from aihwkit.simulator.tiles.module import TileModule

            for tile in (m for m in mod.modules() if isinstance(m, TileModule)):
                tile.set_input_range(r)
        return handles


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
    # after the scales: the tiles' own weights (Linear and GPT-2 Conv1D layers, outliers.py)
    outliers = ol.split(prepared, m, ol.split_layers(prepared, placement))
    return Mapped(prepared.eval(), clipped, calibration, calibrated, outliers)


def on_tiles(mapped: Mapped, placement, rpu) -> tuple[nn.Module, list[str]]:
    """The mapped model on aihwkit tiles with `rpu` (devices.rpu_config), its digital parts installed:
    (the AnalogWrapper model, the placement layers it put on tiles)."""
    from ..analog.tiles import to_aihwkit

    analog, simulated = to_aihwkit(mapped.model, placement, rpu)
    mapped.install(analog)
    return analog, simulated
