"""The one device table and the one builder of aihwkit RPU configs (`rpu_config`): certify, `to_aihwkit`,
`export --to aihwkit`, the hwa_aihwkit recipe and the benchmarks all get their tiles' settings here.

    PCM          PCMLikeNoiseModel(g_max=25) + GlobalDriftCompensation (aihwkit's standard PCM statistics)
    ReRAM        ReRamWan2022NoiseModel (also accepted as ReRAM-Wan2022, the name older exports recorded)
    ReRAM-CMO    ReRamCMONoiseModel
    Hermes-PCM   HermesNoiseModel (IBM HERMES project chip statistics)
    ideal        perfect tile: no programming/read noise, no drift, no IO non-idealities (= digital)
    custom       a YAML file naming an aihwkit noise model, its parameters and IO settings

IO settings left at None keep the base config's value (aihwkit's InferenceRPUConfig: 7-bit DAC,
9-bit ADC, out_noise 0.06, 512x512 tiles; or the standard-hwa preset's 8/8 bits, w_noise 0.0175
PCM_READ, out_noise 0.04). The certificate records the values that were actually used.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .._config import ChoiceConfig
from ..errors import UsageError, unknown

Device = Literal["PCM", "ReRAM", "ReRAM-CMO", "Hermes-PCM", "ideal", "custom"]
DEVICES = get_args(Device)
#: other names a device was recorded under (older aihwkit exports): read as the canonical name
DEVICE_ALIASES = {"reram-wan2022": "ReRAM"}
#: aihwkit's hardware-aware-training weight modifiers (the hwa_aihwkit recipe's `modifier`)
Modifier = Literal["add_normal", "mult_normal", "pcm_noise"]
MODIFIERS = {"add_normal": "ADD_NORMAL", "mult_normal": "MULT_NORMAL", "pcm_noise": "PCM_NOISE"}
Preset = Literal["standard-hwa"]
Tile = Literal["auto", "cpp", "torch"]
#: noise models a custom YAML may name (an allow-list: nothing else is ever instantiated)
NoiseModel = Literal["PCMLikeNoiseModel", "ReRamWan2022NoiseModel", "ReRamCMONoiseModel", "HermesNoiseModel",
                     "StateIndependentNoiseModel"]
WNoiseType = Literal["additive_constant", "pcm_read", "relative"]


def canonical_device(name: str) -> str:
    """The device table's spelling of `name` (any case, or an alias); an unknown name comes back as given."""
    return {**{d.lower(): d for d in DEVICES}, **DEVICE_ALIASES}.get(name.lower(), name)


@dataclass(frozen=True)
class IOSettings(ChoiceConfig):
    """Peripheral settings of the analog tiles; None keeps the base config's value.

    dac_bits / adc_bits: input (DAC) and output (ADC) resolution; 0 = no quantisation.
    out_noise: Gaussian noise on each output, relative to the output bound.
    tile_size: the largest crossbar (rows = columns); bigger layers are split over several tiles.
    drift_compensation: GlobalDriftCompensation on/off.
    n_w: the seed's `inference.platform.aihwkit.n_w`: aihwkit's forward.w_noise, weight noise on every
        MAC (C++ tiles only). w_noise_type: how it scales (additive_constant, pcm_read, relative).
    """

    dac_bits: int | None = None
    adc_bits: int | None = None
    out_noise: float | None = None
    tile_size: int | None = None
    drift_compensation: bool | None = None
    n_w: float | None = None
    w_noise_type: WNoiseType | None = None

    _choices = {"w_noise_type": "w_noise_type"}

    @classmethod
    def spelling(cls, name: str, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    def __post_init__(self):
        self.set_choices()
        for name in ("dac_bits", "adc_bits"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 24:
                raise UsageError(f"{name} must be in 0..24 (0 = no quantisation), got {v}")
        if self.out_noise is not None and self.out_noise < 0:
            raise UsageError(f"out_noise must be >= 0, got {self.out_noise}")
        if self.n_w is not None and self.n_w < 0:
            raise UsageError(f"n_w must be >= 0, got {self.n_w}")
        if self.tile_size is not None and self.tile_size < 1:
            raise UsageError(f"tile_size must be >= 1, got {self.tile_size}")


@dataclass(frozen=True)
class CustomDevice(ChoiceConfig):
    """The YAML file behind `--device custom --device-file FILE`.

        name: my-pcm                       # shown in the certificate and the card
        noise_model: PCMLikeNoiseModel     # one of NoiseModel
        params: {g_max: 25.0, prog_noise_scale: 1.5}
        io: {dac_bits: 8, adc_bits: 8, out_noise: 0.04, drift_compensation: true}
    """

    noise_model: NoiseModel = "PCMLikeNoiseModel"
    name: str = "custom"
    params: dict[str, Any] = field(default_factory=dict)
    io: IOSettings = field(default_factory=IOSettings)

    _choices = {"noise_model": "noise model"}

    def __post_init__(self):
        self.set_choices()


@dataclass(frozen=True)
class DeviceConfig(ChoiceConfig):
    """Which simulated chip a certificate is for (`name` in any case, or an alias). `tile`: auto, cpp (C++
    InferenceRPUConfig) or torch."""

    name: Device = "PCM"
    io: IOSettings = field(default_factory=IOSettings)
    preset: Preset | None = None
    tile: Tile = "auto"
    custom: CustomDevice | None = None

    _choices = {"name": "device", "preset": "preset", "tile": "tile kind"}

    @classmethod
    def spelling(cls, name: str, value: Any) -> Any:
        return canonical_device(value) if name == "name" and isinstance(value, str) else value

    def __post_init__(self):
        self.set_choices()
        if self.name == "custom" and self.custom is None:
            raise UsageError("device custom needs a YAML file", "pass `device_file=my-device.yaml` (its keys: noise_model, params, io)")
        if self.name == "ideal":
            given = [k for k, v in self.io.to_dict().items() if v is not None] + (["preset"] if self.preset else [])
            if given:  # a perfect tile would silently ignore them
                raise UsageError(f"the ideal device has perfect IO and no noise; {', '.join(given)} cannot apply",
                                 "use `device=PCM` (or custom) with those settings, or drop them")
        if self.name != "custom" and self.custom is not None:
            raise UsageError(f"a device file only goes with `device=custom` (got `device={self.name}`)")

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> DeviceConfig:
        """`--device custom --device-file FILE`: read and validate the YAML file."""
        import yaml

        p = Path(path)
        if not p.is_file():
            raise UsageError(f"device file not found: {p}", "pass a YAML file with noise_model, params and io")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise UsageError(f"{p} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise UsageError(f"{p} must hold a mapping (noise_model, params, io)")
        return cls(name="custom", custom=CustomDevice.from_dict(data, where=""), **kwargs)

    @property
    def label(self) -> str:
        return self.custom.name if self.custom else self.name

    def effective_io(self) -> IOSettings:
        """The user's IO settings over the custom file's (command-line values win)."""
        if self.custom is None:
            return self.io
        merged = self.custom.io.to_dict()
        merged.update({k: v for k, v in self.io.to_dict().items() if v is not None})
        return IOSettings.from_dict(merged)

    def needs_cpp(self) -> str:
        """Why this config needs the C++ tile ('' when the torch tile can run it)."""
        io = self.effective_io()
        if io.n_w:
            return "n_w (aihwkit forward.w_noise)"
        if self.preset:
            return f"preset {self.preset} (its PCM_READ weight noise)"
        return ""


@dataclass(frozen=True)
class WeightModifier:
    """Hardware-aware training's weight noise: aihwkit's modifier `kind` (MODIFIERS) of `std`, relative to
    the tile's max|w|, applied to the weights in every training forward pass."""

    kind: Modifier
    std: float

    def __post_init__(self):
        if self.kind not in MODIFIERS:
            raise unknown("weight modifier", self.kind, MODIFIERS)


def noise_model(config: DeviceConfig):
    """The aihwkit noise model of a device (training's `device` noise builds certify's PCM here too)."""
    from aihwkit.inference import (PCMLikeNoiseModel, ReRamCMONoiseModel, ReRamWan2022NoiseModel,
                                   StateIndependentNoiseModel)
    from aihwkit.inference.noise.hermes import HermesNoiseModel

    classes = {c.__name__: c for c in (PCMLikeNoiseModel, ReRamWan2022NoiseModel, ReRamCMONoiseModel,
                                       HermesNoiseModel, StateIndependentNoiseModel)}
    name = config.name
    if name == "PCM":
        return PCMLikeNoiseModel(g_max=25.0)
    if name == "ReRAM":
        return ReRamWan2022NoiseModel()
    if name == "ReRAM-CMO":
        return ReRamCMONoiseModel()
    if name == "Hermes-PCM":
        return HermesNoiseModel()
    if name == "ideal":
        return StateIndependentNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0,
                                          drift_nu_mean=0.0, drift_nu_std=0.0)
    custom = config.custom
    cls = classes[custom.noise_model]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "g_converter")]
    for key in custom.params:
        if key not in valid:
            raise UsageError(f"unknown parameter {key!r} for {custom.noise_model}", f"valid: {', '.join(valid)}")
    try:
        return cls(**custom.params)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad parameters for {custom.noise_model}: {exc}") from None


def _res(bits: int) -> float:
    """aihwkit's resolution for a b-bit converter (1/(2^b - 2), as its defaults); 0 bits -> -1 = unquantised."""
    return -1.0 if bits == 0 else 1.0 / (2**bits - 2)


def _bits(res: float) -> int:
    if res <= 0:
        return 0
    steps = res if res > 1 else 1.0 / res  # aihwkit accepts steps (>1) or the resolution (1/steps)
    return int(round(math.log2(steps + 2)))


def rpu_config(config: DeviceConfig, tile: str, mapping=None, modifier: WeightModifier | None = None):
    """The aihwkit rpu_config for `config` on tile kind `tile` ('cpp' or 'torch'), mapped by `mapping`
    (a MappingConfig; None = one scale per tile, dynamic inputs, a global drift correction).

    `modifier`: a config for hardware-aware training (AnalogSGD) instead of inference: the weight noise of
    every training pass, and the tile holding the weights as they are (no weight scaling), as aihwkit's
    own HWA training has it. The only place an RPU config is built."""
    from aihwkit.inference import GlobalDriftCompensation
    from aihwkit.simulator.configs import (InferenceRPUConfig, TorchInferenceRPUConfig, WeightModifierType,
                                           WeightNoiseType)

    if config.preset == "standard-hwa":
        from aihwkit.simulator.presets import StandardHWATrainingPreset

        rpu = StandardHWATrainingPreset()
    else:
        rpu = InferenceRPUConfig() if tile == "cpp" else TorchInferenceRPUConfig()
        rpu.drift_compensation = GlobalDriftCompensation()
        if modifier is None:
            # map each tile's largest |w| to the full conductance range (as aihwkit's inference tutorials do):
            # noise levels (out_noise, n_w) then mean the same thing whatever the raw scale of the weights
            rpu.mapping.weight_scaling_omega = 1.0
    rpu.noise_model = noise_model(config)
    if config.name == "ideal":
        rpu.forward.is_perfect = True
        rpu.drift_compensation = None
    io = config.effective_io()
    if io.dac_bits is not None:
        rpu.forward.inp_res = _res(io.dac_bits)
    if io.adc_bits is not None:
        rpu.forward.out_res = _res(io.adc_bits)
    if io.out_noise is not None:
        rpu.forward.out_noise = io.out_noise
    if io.tile_size is not None:
        rpu.mapping.max_input_size = rpu.mapping.max_output_size = io.tile_size
    if io.drift_compensation is not None:
        rpu.drift_compensation = GlobalDriftCompensation() if io.drift_compensation else None
    if io.n_w is not None:
        rpu.forward.w_noise = io.n_w
        if io.n_w > 0 and (io.w_noise_type or rpu.forward.w_noise_type == WeightNoiseType.NONE):
            rpu.forward.w_noise_type = WeightNoiseType[(io.w_noise_type or "additive_constant").upper()]
        elif io.n_w == 0 and not config.preset:
            rpu.forward.w_noise_type = WeightNoiseType.NONE
    if mapping is not None:
        _apply_mapping(rpu, mapping.complete(), keep_inputs=bool(config.preset))
    if modifier is not None:
        rpu.modifier.type = getattr(WeightModifierType, MODIFIERS[modifier.kind])
        rpu.modifier.std_dev = modifier.std
        rpu.modifier.rel_to_actual_wmax = True
    return rpu


def _apply_mapping(rpu, m, keep_inputs: bool = False) -> None:
    """The aihwkit fields behind a MappingConfig (clipping and input scaling act on the weights instead)."""
    from aihwkit.inference.compensation.drift import GlobalDriftCompensation, PerColumnDriftCompensation
    from aihwkit.simulator.parameters.enums import NoiseManagementType

    rpu.mapping.weight_scaling_omega = 1.0
    rpu.mapping.weight_scaling_columnwise = m.weight_scaling == "column"
    if rpu.drift_compensation is not None:
        rpu.drift_compensation = (PerColumnDriftCompensation() if m.output_scaling == "column"
                                  else GlobalDriftCompensation())
    ir = rpu.pre_post.input_range
    if m.input_range != "dynamic":
        # a static range per layer (calibrated, or learned in training), set on every tile after conversion;
        # it replaces the dynamic abs-max scaling (aihwkit: noise management off with input ranges)
        ir.enable, ir.learn_input_range, ir.init_from_data = True, False, 0
        rpu.forward.noise_management = NoiseManagementType.NONE
    elif not keep_inputs:  # a preset keeps its own input handling unless calibrated ranges are asked for
        ir.enable = False
        if rpu.forward.noise_management == NoiseManagementType.NONE:
            rpu.forward.noise_management = NoiseManagementType.ABS_MAX


def fixed_times(rpu) -> list[float] | None:
    """Seconds a noise model is characterised at, when it only knows fixed times (ReRamWan2022: 1 s, 1 d, 2 d)."""
    coeff = getattr(rpu.noise_model, "coeff_dic", None)
    if type(rpu.noise_model).__name__ == "ReRamWan2022NoiseModel" and isinstance(coeff, dict):
        return sorted(float(t) for t in coeff)
    return None


def describe(config: DeviceConfig, rpu, tile: str) -> dict[str, Any]:
    """Every setting that shapes the simulation, read back from the rpu_config that ran."""
    fwd = rpu.forward
    nm = rpu.noise_model
    params = {k: v for k, v in vars(nm).items() if isinstance(v, (int, float, str, bool, list)) or v is None}
    g_conv = getattr(nm, "g_converter", None)
    if g_conv is not None:
        params["g_converter"] = type(g_conv).__name__
    return {
        "name": config.label,
        "kind": config.name,
        "preset": config.preset,
        "tile": tile,
        "rpu_config": type(rpu).__name__,
        "noise_model": type(nm).__name__,
        "noise_params": params,
        "drift_compensation": type(rpu.drift_compensation).__name__ if rpu.drift_compensation else None,
        "perfect_io": bool(fwd.is_perfect),
        "dac_bits": _bits(fwd.inp_res),
        "adc_bits": _bits(fwd.out_res),
        "inp_res": fwd.inp_res,
        "out_res": fwd.out_res,
        "out_noise": fwd.out_noise,
        "out_bound": fwd.out_bound,
        "n_w": fwd.w_noise,
        "w_noise_type": fwd.w_noise_type.name.lower(),
        "ir_drop": fwd.ir_drop,
        "bound_management": fwd.bound_management.name.lower(),
        "noise_management": fwd.noise_management.name.lower(),
        "tile_size": [rpu.mapping.max_input_size, rpu.mapping.max_output_size],
        "weight_scaling_omega": rpu.mapping.weight_scaling_omega,
        "weight_scaling_columnwise": bool(rpu.mapping.weight_scaling_columnwise),
        "input_range": bool(getattr(getattr(rpu, "pre_post", None), "input_range", None)
                            and rpu.pre_post.input_range.enable),
    }
