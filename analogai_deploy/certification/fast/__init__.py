"""The fast certify engine: aihwkit's device statistics, the network's own fused forward.

    cert = analogai_deploy.certify("runs/lenet", engine="fast")      # CLI: certify PKG --engine fast

aihwkit's tiles simulate an analog layer as unfold + a Python-level IO-managed matmul per tile,
which costs 8-15x a digital pass. The statistics that decide a certificate are not in that loop
but in the noise model and the periphery, so this engine keeps those and drops the loop:

  * weights: every layer is cut into tiles exactly as aihwkit's TileModuleArray does (even splits
    of at most tile_size rows / columns); a grouped convolution (depthwise included) gives every
    group its own tiles, its [out / groups, in / groups * kh * kw] matrix split the same way. Each
    tile is mapped to max|w| = 1 (weight_scaling_omega = 1). Per repeat programming (programming noise
    + drift coefficients nu) and per time drift (drift + read noise), on the same normalised tile
    weights aihwkit's tiles hold. aihwkit's PCM (PCMLikeNoiseModel, single device pair, g_min = 0)
    runs as one native pass per bank (hardware/pcm.py: aihwkit's maths, exact shortcuts, tests/test_pcm.py
    compares it with aihwkit's functions); other noise models run aihwkit's own classes. Tiles of one
    shape are stacked in a bank; on aihwkit's classes, PCM-like models (element-wise conductance
    functions, one device pair) run a bank in slices of at most BATCH_ELEMENTS weights per call (per
    tile scale ratios), other noise models per tile.
  * drift compensation: GlobalDriftCompensation's readout (mean |tile(eye)| through the noisy,
    quantised periphery) at programming and at time t, alpha = baseline / current, as aihwkit does,
    for a whole bank at once (native PCM: fused into the drift pass).
  * forward: the ordinary F.linear / F.conv2d with the effective weights, and around it the torch
    tile's periphery: ABS_MAX noise management per input vector (per conv patch and input chunk: a
    max over shifted strided views of |x|, the kernel/stride/padding/dilation's patches, no im2col),
    DAC quantisation, output noise, ADC quantisation and clipping at out_bound, iterative bound
    management per tile (halve the inputs and redo the tile while any output of the batch clips).
    A chunk of a convolution's inputs that splits a channel's kernel convolves only the channels it
    touches, with the kernel positions outside the chunk zeroed.

Linear layers are exact: given the same effective weights, their outputs equal aihwkit's bit for bit
up to float rounding. One approximation, for convolutions only: aihwkit rounds every im2col patch
on its own DAC grid (step = patch max * 2 / (2^b - 2)), which a fused convolution cannot do. Here
the rounding error is drawn instead, as the noise it is statistically: uniform over one grid step on
every non-zero input (zeros convert exactly), so the output gets Gaussian noise of variance
step^2 / 12 * (fraction of non-zero inputs) * sum_j w_oj^2 on top of out_noise^2, before the ADC.
That matches the error's size per output, not its exact value; the agreement test and BENCHMARKS.md
check that accuracy statistics agree. `FastModel(..., exact=True)` runs convolutions as aihwkit
does (im2col through the tile periphery, bit-exact, ~2x slower; ungrouped convolutions only).
Settings only aihwkit's C++ tiles have (n_w, the standard-hwa preset) are refused: use the aihwkit
engine for those. Output noise is drawn by hardware/native (the training noise's generator) where it
is built, else by torch.

The package: banks.py (the tile split), device.py (programming and drift), periphery.py (the torch tile's
periphery), kernels.py (the forward per layer kind), layer.py (FastLayer), engine.py (FastModel, `choose`).
"""
from .engine import FastModel, check_supported, choose
from .kernels import patch_max
from .layer import FastLayer

__all__ = ["FastModel", "FastLayer", "check_supported", "choose", "patch_max"]
