"""The engines certify simulates a chip with, behind one interface, chosen by name from `SIMULATORS`.

    sim = SIMULATORS["fast"].install(mapped, placement, rpu)   # the mapped model on the engine's tiles
    sim.program(); sim.drift(86400.0); outputs = sim.model(x)   # one Monte Carlo draw at 1 d

aihwkit: aihwkit's own tiles (analog/tiles.py; the model `to_aihwkit` returns). fast: aihwkit's device model
around the network's fused forward (fast/). `auto`, the default, is not an engine: config.resolve replaces it
with the one fast.choose picks for the package and device, and the certificate records which ran and why.
"""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from ..hardware.devices import DeviceConfig
from ..hardware.probe import choose_tile
from .simulated import Mapped

class Simulator:
    """One engine's chip: `model` (an nn.Module) runs the placement's layers on simulated tiles; `program()`
    draws fresh programming noise, `drift(t)` the state at t seconds after programming (always from the
    programmed state); `simulated` names the placement layers on tiles, in placement order."""

    name: ClassVar[str]
    progress_label: ClassVar[str]  # the Monte Carlo progress bar's

    def __init__(self, model: nn.Module, simulated: list[str], placement):
        self.model, self.simulated, self.placement = model, simulated, placement

    @classmethod
    def tile(cls, device: DeviceConfig) -> str:
        """The aihwkit tile kind that runs `device` on this engine (refused where the engine cannot)."""
        raise NotImplementedError

    @classmethod
    def install(cls, mapped: Mapped, placement, rpu) -> Simulator:
        """The mapped model's placement layers on this engine's tiles, its digital parts installed."""
        raise NotImplementedError

    def program(self) -> None:
        raise NotImplementedError

    def drift(self, seconds: float) -> None:
        raise NotImplementedError

    def conversion(self) -> dict[str, Any]:
        """The certificate's conversion block: layers and tiles simulated, what stayed digital."""
        raise NotImplementedError


class AihwkitSimulator(Simulator):
    name, progress_label = "aihwkit", "certify"

    @classmethod
    def tile(cls, device: DeviceConfig) -> str:
        return choose_tile(device)

    @classmethod
    def install(cls, mapped: Mapped, placement, rpu) -> AihwkitSimulator:
        from aihwkit.simulator.tiles.module import TileModule

        from ..analog.tiles import to_aihwkit

        analog, simulated = to_aihwkit(mapped.model, placement, rpu)
        mapped.install(analog)
        for name, r in mapped.input_ranges.items():  # every tile of the layer
            for tile in (m for m in analog.get_submodule(name).modules() if isinstance(m, TileModule)):
                tile.set_input_range(r)
        return cls(analog, simulated, placement)

    def program(self) -> None:
        self.model.eval()
        self.model.program_analog_weights()  # fresh programming noise for this repeat

    def drift(self, seconds: float) -> None:
        self.model.drift_analog_weights(seconds)

    def conversion(self) -> dict[str, Any]:
        from ..analog.tiles import conversion

        return conversion(self.model, self.placement, self.simulated)


class FastSimulator(Simulator):
    name, progress_label = "fast", "certify (fast)"

    @classmethod
    def tile(cls, device: DeviceConfig) -> str:
        """The fast engine reproduces aihwkit's PyTorch tile (and refuses what only the C++ tile simulates)."""
        from .fast import check_supported

        check_supported(device)
        choose_tile(DeviceConfig.from_dict({**device.to_dict(), "tile": "torch"}))  # aihwkit must be usable
        return "torch"

    @classmethod
    def install(cls, mapped: Mapped, placement, rpu) -> FastSimulator:
        from .fast import FastModel

        model = FastModel(mapped.model, rpu, placement=placement)  # the record's layers, not re-derived
        mapped.install(model.model)
        model.set_input_ranges(mapped.input_ranges)
        return cls(model, model.simulated, placement)

    def program(self) -> None:
        self.model.program()

    def drift(self, seconds: float) -> None:
        self.model.drift(seconds)

    def conversion(self) -> dict[str, Any]:
        return self.model.conversion()


SIMULATORS: dict[str, type[Simulator]] = {s.name: s for s in (AihwkitSimulator, FastSimulator)}
