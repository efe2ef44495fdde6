"""The fast engine's native PCM statistics (hardware/pcm.py) against aihwkit's own PCMLikeNoiseModel on
the same weights, stage by stage: programmed weights, drift coefficients, drifted weights at several times
(two-sample KS tests per weight-magnitude band, means and standard deviations). Seeds are fixed, so a
pass is reproducible; each comparison has ~10^4 samples a side, enough to see a wrong branch or constant."""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from analogai_deploy.hardware.native import library
from analogai_deploy.hardware import pcm

pytestmark = pytest.mark.skipif(library() is None, reason="no C compiler: the native PCM pass is not built")

TIMES = [0.0, 1.0, 3600.0, 86400.0, 365 * 86400.0]
#: weight-magnitude bands (of the normalised target): the noise model's branches differ by conductance
BANDS = [(0.0, 0.0), (1e-9, 0.01), (0.01, 0.05), (0.05, 0.3), (0.3, 1.0)]


def _noise_model(**kw):
    from aihwkit.inference import PCMLikeNoiseModel

    return PCMLikeNoiseModel(g_max=25.0, **kw)


def _weights(seed: int = 0) -> torch.Tensor:
    """4 tiles of 96x96: Laplace-like weights (many small, a few large), max|w| = 1, some exact zeros."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 96, 96, generator=g) * torch.rand(4, 96, 96, generator=g) ** 2
    w[:, :12] = 0.0
    return w / w.abs().amax((1, 2), keepdim=True)


def _aihwkit(w: torch.Tensor, nm, times):
    """aihwkit per tile, as its tiles call it: programmed weights, nu of the device of sign(programmed),
    the drifted weights at every time."""
    progs, nus, drifted = [], [], {t: [] for t in times}
    for tile in w:
        prog, nu = nm.apply_programming_noise(tile)
        progs.append(prog)
        nus.append(torch.where(prog > 0, nu[0], nu[1]))
        for t in times:
            drifted[t].append(nm.apply_drift_noise(prog, nu, t))
    return torch.stack(progs), torch.stack(nus), {t: torch.stack(v) for t, v in drifted.items()}


def _ours(w: torch.Tensor, nm, times):
    p, nu, q = pcm.program(w, nm)
    return p, nu, {t: pcm.drift(p, nu, q, nm, t)[0].clone() for t in times}


def _compare(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    a, b = a.double().flatten().numpy(), b.double().flatten().numpy()
    res = stats.ks_2samp(a, b)
    assert res.pvalue > 1e-3, (what, res.statistic, res.pvalue)
    se = math.sqrt((a.var() + b.var()) / len(a)) + 1e-12
    assert abs(a.mean() - b.mean()) <= 4.5 * se, (what, a.mean(), b.mean(), se)
    def sd_se(x):  # the standard error of a sample std, from the fourth moment (heavy tails widen it)
        m2, m4 = x.var(), ((x - x.mean()) ** 4).mean()
        return math.sqrt(max(m4 - m2**2, 0.0) / (4 * len(x) * max(m2, 1e-30)))

    assert abs(a.std() - b.std()) <= 4.5 * math.hypot(sd_se(a), sd_se(b)) + 1e-9, (what, a.std(), b.std())


@pytest.mark.parametrize("kw", [{}, {"prog_noise_scale": 2.0, "read_noise_scale": 1.5, "drift_scale": 0.5,
                                     "t_0": 5.0, "prog_coeff": [0.1, 1.0, -0.5, 0.2]}],
                         ids=["default", "scaled"])
def test_native_pcm_is_aihwkit_in_distribution(kw):
    w = _weights()
    nm = _noise_model(**kw)
    assert pcm.supported(nm)
    torch.manual_seed(1)
    ap, anu, ad = _aihwkit(w, nm, TIMES)
    torch.manual_seed(2)
    op, onu, od = _ours(w, nm, TIMES)
    for lo, hi in BANDS:
        band = (w.abs() >= lo) & (w.abs() <= hi)
        assert int(band.sum()) > 1000
        _compare(ap[band] - w[band], op[band] - w[band], f"programming noise |w| in [{lo}, {hi}]")
        # the nu of the device drift uses, where the programmed weight is not 0 (a 0 does not drift)
        _compare(anu[band & (ap != 0)], onu[band & (op != 0)], f"nu |w| in [{lo}, {hi}]")
        # where programming flipped the sign, drift uses the nu of a device with a zero target
        aflip, oflip = band & (ap * w < 0), band & (op * w < 0)
        if min(int(aflip.sum()), int(oflip.sum())) > 200:
            _compare(anu[aflip], onu[oflip], f"nu of flipped weights |w| in [{lo}, {hi}]")
        sign = torch.where(w[band] < 0, -1.0, 1.0)
        for t in TIMES:
            # the drifted weights, signed by the target: |g| / g_max up to the tile's ratio
            _compare(ad[t][band] * sign, od[t][band] * sign, f"drifted |w| in [{lo}, {hi}] at t = {t}")
            # drift and read noise alone: drifted / programmed (t = 0: the read noise only)
            a_nz, o_nz = band & (ap != 0), band & (op != 0)
            _compare(ad[t][a_nz] / ap[a_nz], od[t][o_nz] / op[o_nz], f"drift factor |w| in [{lo}, {hi}] at t = {t}")


def test_native_pcm_drift_keeps_the_programmed_weights_and_their_signs():
    nm = _noise_model()
    torch.manual_seed(0)
    w = _weights(1)
    p, nu, q = pcm.program(w, nm)
    before = p.clone()
    out, _, _ = pcm.drift(p, nu, q, nm, 86400.0)
    assert torch.equal(p, before)  # drift reads the programmed state, each time point afresh
    assert bool(((out == 0) | (torch.sign(out) == torch.sign(p))).all())  # drift never flips a device pair
    assert bool((out[p == 0] == 0).all())
    assert bool(((q >= 0.0088 - 1e-6) & (q <= 0.2)).all())
    # at t_inference = 0 aihwkit does not drift but adds the read noise accumulated since t_0
    out0, _, _ = pcm.drift(p, nu, q, nm, 0.0)
    assert not torch.equal(out0, p)
    assert (out0 - p).abs().mean() < (out - p).abs().mean()


def test_fused_readout_is_the_compensation_readout_of_the_drifted_weights():
    """The drift pass's fused readout (mean |periphery(q1 w + noise)| per tile) against the same readout in
    torch on the weights it wrote, with its own noise: equal up to the noise's standard error."""
    nm = _noise_model()
    torch.manual_seed(3)
    w = _weights(2)
    p, nu, q = pcm.program(w, nm)
    q1, sigma, step, bound = 1.0 - 1 / 127, 0.04, 2 * 12.0 / 510, 12.0
    out, means, peaks = pcm.drift(p, nu, q, nm, 3600.0, readout=(q1, sigma, step, bound))
    v = torch.round((q1 * out + sigma * torch.randn_like(out)) / step) * step
    ref = v.abs().clamp(max=bound).mean((1, 2)).double()
    assert torch.allclose(means, ref, atol=4 * sigma / math.sqrt(out[0].numel()) + 1e-4)
    assert torch.allclose(peaks, v.abs().flatten(1).amax(1), atol=4 * sigma)


def test_other_converters_and_models_are_left_to_aihwkit():
    from aihwkit.inference import PCMLikeNoiseModel, ReRamWan2022NoiseModel
    from aihwkit.inference.converter.conductance import DualPairConductanceConverter, SinglePairConductanceConverter

    assert not pcm.supported(PCMLikeNoiseModel(g_converter=SinglePairConductanceConverter(g_max=25.0, g_min=1.0)))
    assert not pcm.supported(PCMLikeNoiseModel(g_converter=DualPairConductanceConverter(f_lst=[1.0, 3.0])))
    assert not pcm.supported(ReRamWan2022NoiseModel())
