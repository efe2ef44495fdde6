"""A recipe's `noise` and `io` sections on a model's analog layers: the training noise that matches the certify
hardware (its tensor maths: hardware/noise.py), the learned input ranges and the step clip it brings, and the
mapping record it leaves in config.json.

  input scaling  (noise.input_scaling: package) s is calibrated once, before training, on the package's clean
         weights and certify's calibration inputs (`input_scales`), as certify will map the package.
"""
from __future__ import annotations

import torch

from ..analog.convert import analog_layers
from ..analog.mapping import sharers
from ..errors import UsageError
from ..hardware.clipping import clamp, clip_bound
from ..hardware.noise import RANGE, RANGE_SEEN, HardwareNoise

#: the analog layer types whose forward runs the periphery (`layers._tile`)
RANGED = ("AnalogLinear", "AnalogConv1d", "AnalogConv2d", "AnalogConv3d", "AnalogHFConv1D")
#: the analog layer types whose input a per-channel scale can divide (their forward calls `_tile`)
SCALABLE = ("AnalogLinear", "AnalogConv1d", "AnalogConv2d", "AnalogConv3d")


def apply(model, noise, io, in_scales: dict[str, torch.Tensor] | None = None) -> int:
    """Put one HardwareNoise (from a recipe's noise / io sections) on every analog layer; returns how many.
    `noise` / `io` None: back to the seed's noise model. `in_scales`: s per layer name (`input_scales`)."""
    if noise is not None and noise.clip_when == "step":
        _refuse_tied_step_clip(model)
    n = 0
    learned = noise is not None and io.input_range.mode == "learned"
    for name, layer in analog_layers(model):
        layer.analog.hw = None if noise is None else HardwareNoise(
            noise.scale, noise.model, noise.clip, noise.clip_value, io.out_noise, io.dac_bits, io.adc_bits,
            io.out_bound, (in_scales or {}).get(name), noise.seconds,
            noise.outlier_std if noise.outliers == "digital" else 0.0, noise.slicing_factor,
            noise.clip_when == "step", io.input_range if learned and type(layer).__name__ in RANGED else None)
        if layer.analog.hw is not None and layer.analog.hw.input_range is not None:
            if RANGE not in layer._parameters:
                p = next(layer.parameters())
                layer.register_parameter(RANGE, torch.nn.Parameter(
                    torch.full((), io.input_range.init_value, dtype=p.dtype, device=p.device)))
                layer.register_buffer(RANGE_SEEN, torch.zeros((), dtype=torch.long, device=p.device))
        elif RANGE in layer._parameters:
            del layer._parameters[RANGE], layer._buffers[RANGE_SEEN]
        n += 1
    return n


def learned_input_ranges(model) -> dict[str, float]:
    """{layer name: r} of the layers that learned an input range."""
    return {name: float(layer._parameters[RANGE].detach()) for name, layer in analog_layers(model)
            if RANGE in layer._parameters}


def _refuse_tied_step_clip(model) -> None:
    """A step clip rewrites the weight in place: on a weight tied to a digital layer (SmolLM2's LM head is its
    embedding table) it would clip that layer too. aihwkit-lightning's conversion gives the head its own copy;
    here the forward clip does the same (a clipped copy per pass, and certify clips the tile's own copy)."""
    for name, layer in analog_layers(model):
        for pname in layer.analog_weights:
            tied = sharers(model, layer, layer.get_parameter(pname))
            if tied:
                raise UsageError(
                    f"noise.clip_when: step would clip {name}'s weights in place, and they are tied to {tied[0]} "
                    "(a tied LM head and embedding table): the clip would rewrite that layer too",
                    "override noise.clip_when=forward: each forward pass then uses a clipped copy, and the package "
                    "records the clip for certify")


@torch.no_grad()
def clip_step(model) -> None:
    """noise.clip_when: step - clip the analog layers' weights in place (after an optimizer step), as
    aihwkit-lightning's clip_weights: +-clip_value std of the layer (layer_std) or of each output channel."""
    for _, layer in analog_layers(model):
        hw = layer.analog.hw
        if hw is None or not hw.step_clip:
            continue
        channel_dim = 1 if type(layer).__name__ == "AnalogHFConv1D" else 0
        for pname in layer.analog_weights:
            w = layer.get_parameter(pname)
            w.copy_(clamp(w, clip_bound(w, hw.clip, hw.clip_value, channel_dim)))


def has_step_clip(model) -> bool:
    return any(layer.analog.hw is not None and layer.analog.hw.step_clip for _, layer in analog_layers(model))


def input_scales(pkg, model) -> tuple[dict[str, torch.Tensor], dict]:
    """The per-input-channel scales s certify will use for this package's mapping (noise.input_scaling:
    package): certify's own calibration (same inputs, same formula) on the package's clean weights.
    Returns ({layer name: s}, what the calibration ran on); empty where the mapping scales no inputs."""
    import copy

    from ..analog import mapping as mp
    from ..analog.convert import to_digital
    from ..data.calibration import calibration_batches

    m = mp.package_mapping(pkg.config).complete()
    if m.input_scaling != "channel":
        return {}, {}
    digital = to_digital(copy.deepcopy(model)).eval()
    m_clip = mp.MappingConfig.from_dict({**m.to_dict(), "clip": "none"})  # training clips in the forward pass
    batches, info = calibration_batches(pkg.path, pkg.config, m_clip, None)
    cal = mp.calibrate(digital, batches, m_clip, info, mp.mapped_layers(digital, pkg.placement))
    kinds = {n: type(layer).__name__ for n, layer in analog_layers(model)}
    scales = {n: s.detach().clone() for n, s in cal.scales.items()
              if kinds.get(n) in SCALABLE and getattr(model.get_submodule(n), "groups", 1) == 1}
    return scales, {**info, "layers": len(scales)}


def trained_mapping(noise, io, input_ranges: dict[str, float] | None = None) -> dict:
    """What a recipe with these sections trained the package for, as config.json["mapping"] fields.
    `input_ranges`: the learned ones (`learned_input_ranges`), recorded with input_range: learned."""
    # weights clipped after every step are stored within the bound: certify programs them as they are (a
    # second clip at clip_value std of the clipped weights, whose std is smaller, would cut deeper than training)
    clipped = "none" if noise.clip_when == "step" else noise.clip
    out = {"weight_scaling": noise.scale, "clip": clipped,
           "clip_value": noise.clip_value, "outliers": noise.outliers, "outlier_std": noise.outlier_std}
    # certify scales the inputs as training did: not at all (noise.input_scaling: none), or as the package's
    # mapping says (package: training calibrated its scales from that mapping, which then stays as it is)
    if noise.input_scaling == "none":
        out["input_scaling"] = "none"
    if io.input_range.mode == "learned":
        out.update(input_range="learned", input_ranges=dict(input_ranges or {}))
    trained_io = {k: getattr(io, k) for k in ("dac_bits", "adc_bits", "out_noise") if getattr(io, k)}
    if trained_io:
        out["io"] = trained_io
    return out
