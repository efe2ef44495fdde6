"""aihwkit 1.1's PCM device statistics (PCMLikeNoiseModel on a SinglePairConductanceConverter), in one
native pass each: the fast engine's programming and drift (hardware/native/normal.c: pcm_program, pcm_drift),
and the training noise's view of the same device (`prog_sigma`, `device_deviation`: hardware/noise.py).

aihwkit runs them as a dozen torch element-wise ops over both devices of every pair, ~65 ns a weight per
call on one thread; here programming and drift cost a few ns a weight. The maths is aihwkit's
(apply_programming_noise_to_conductance, generate_drift_coefficients, apply_drift_noise_to_conductance,
convert_to_conductances / convert_back_to_weights per tile); the shortcuts are exact in distribution:

  * drift re-derives the conductances from the programmed weights, so one device of a pair is non-zero
    there and the other drifts and reads as 0; only that device's nu is drawn (from its target
    conductance: the weight's when the programmed sign is the target's, else a zero target);
  * the 1/f read-noise factor depends on the programmed weights only: computed once per repeat.

tests/test_pcm.py compares every stage with aihwkit's own functions on the same weights (moments and
two-sample KS tests). Other noise models, g_min > 0 and other converters run aihwkit's classes
(certification/fast/device.py).
"""
from __future__ import annotations

import functools
import math

import torch

from .draws import seed, threaded_native

#: aihwkit's PCM programming polynomial has 3 coefficients; the native pass takes up to 4 (degree 3)
MAX_COEFFS = 4
#: aihwkit 1.1 PCMLikeNoiseModel.prog_coeff (uS at g_max = 25 uS): sigma_prog(u) = c0 + c1 u + c2 u^2
PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)
#: c * sigma of the seed's Gaussian that matches aihwkit's PCM programming noise at its defaults: the unit in
#: which the training noise's `device` model's deviation is scaled
PCM_C_SIGMA = 0.0435


def prog_sigma(u):
    """The programming noise's std (uS) of a device at normalised conductance u (a float or a tensor)."""
    c0, c1, c2 = PCM_PROG_COEFF
    return c0 + c1 * u + c2 * u * u


#: the std of a weight at |u| = 1 (one device at g_max, its pair partner at 0): the `pcm` model's unit
PROG_NORM = math.sqrt(prog_sigma(1.0) ** 2 + prog_sigma(0.0) ** 2)


def supported(noise_model) -> bool:
    """Whether the native pass simulates this noise model exactly (aihwkit's default PCM and its variants
    with other g_max, scales, polynomial or t_0 / t_read)."""
    from aihwkit.inference import PCMLikeNoiseModel
    from aihwkit.inference.converter.conductance import SinglePairConductanceConverter

    conv = getattr(noise_model, "g_converter", None)
    return (type(noise_model) is PCMLikeNoiseModel and type(conv) is SinglePairConductanceConverter
            and float(conv.g_min) == 0.0 and float(conv.g_max) == float(noise_model.g_max) and 1 <= len(noise_model.prog_coeff) <= MAX_COEFFS)


def available(noise_model, like: torch.Tensor) -> bool:
    """The native pass applies: a supported model, CPU float32 weights and a built library."""
    return threaded_native(like) is not None and supported(noise_model)


def program(ref: torch.Tensor, nm) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Programme T tiles ([T, rows, cols] normalised weights, each converted by its own max|w| as aihwkit's
    tile does): the programmed weights, each weight's drift coefficient nu and its read-noise factor q."""
    lib = threaded_native(ref)
    ref = ref.contiguous()
    p, nu, q = torch.empty_like(ref), torch.empty_like(ref), torch.empty_like(ref)
    coeff = torch.zeros(MAX_COEFFS)
    coeff[:len(nm.prog_coeff)] = torch.tensor([float(c) for c in nm.prog_coeff])
    g_max = float(nm.g_converter.g_max)
    lib.pcm_program(ref.data_ptr(), ref.shape[0], ref[0].numel(), coeff.data_ptr(),
                    float(nm.g_max) / float(nm.prog_coeff_g_max_reference), g_max, float(nm.prog_noise_scale),
                    float(nm.drift_scale), seed(), p.data_ptr(), nu.data_ptr(), q.data_ptr())
    return p, nu, q


def drift_factors(nm, seconds: float) -> tuple[float, float]:
    """(log(t / t0) or 0 where aihwkit does not drift, the read noise's std per unit q) at t_inference."""
    t = float(seconds) + float(nm.t_0)
    log_ratio = math.log(t / nm.t_0) if t > nm.t_0 else 0.0
    noise = float(nm.read_noise_scale) * math.sqrt(math.log((t + nm.t_read) / (2 * nm.t_read))) if t > 0 else 0.0
    return log_ratio, noise


def drift(p: torch.Tensor, nu: torch.Tensor, q: torch.Tensor, nm, seconds: float, out: torch.Tensor | None = None,
          readout: tuple[float, float, float, float] | None = None):
    """The weights at t_inference = seconds (drift and accumulated read noise), into `out` (fresh if None).
    `readout` (q1, out_noise, ADC step, out_bound): also GlobalDriftCompensation's one-hot readout of every
    tile through the periphery in the same pass (as native readout_many); returns (out, means, peaks),
    means / peaks None without a readout."""
    lib = threaded_native(p)
    if out is None:
        out = torch.empty_like(p)
    log_ratio, noise = drift_factors(nm, seconds)
    T, n = p.shape[0], p[0].numel()
    means = torch.empty(T, dtype=torch.float64) if readout else None
    peaks = torch.empty(T) if readout else None
    q1, sigma, step, bound = readout or (0.0, 0.0, 0.0, 0.0)
    lib.pcm_drift(p.data_ptr(), nu.data_ptr(), q.data_ptr(), T, n, log_ratio, noise, seed(), out.data_ptr(),
                  1 if readout else 0, q1, sigma, step, bound, means.data_ptr() if readout else None,
                  peaks.data_ptr() if readout else None)
    return out, means, peaks


@functools.lru_cache(maxsize=1)
def pcm_device():
    """certify's PCM device model (hardware/devices.py), built once."""
    from .devices import DeviceConfig, noise_model

    return noise_model(DeviceConfig(name="PCM"))


def device_deviation(u: torch.Tensor, seconds: float, nm=None) -> torch.Tensor:
    """What the PCM device makes of normalised weights u (max|u| <= 1, one tile) `seconds` after programming,
    minus u: programming noise, drift and read noise, then the global drift compensation's gain (the mean
    |w| at programming over the mean |w| now, the one-hot readout certify's GlobalDriftCompensation takes)."""
    nm = nm if nm is not None else pcm_device()
    u = u.float().contiguous()
    if available(nm, u):  # aihwkit's maths in one native pass per stage
        p, nu, q = program(u.unsqueeze(0), nm)
        now = drift(p, nu, q, nm, seconds)[0][0]
        p = p[0]
    else:  # aihwkit's own functions (CUDA, or no native library)
        p, nu = nm.apply_programming_noise(u)
        now = nm.apply_drift_noise(p, nu, seconds)
    gain = p.abs().sum() / now.abs().sum().clamp(min=1e-12)
    return now * gain - u
