"""The training weight noise is what DESIGN.md says: eps ~ N(0, s^2), s = c * sigma * max|W|, fresh and
independent on every forward pass and in every client, with the gradient straight through to W.
Statistical checks on >= 10^5 draws; thresholds are 4-5 standard errors (a false alarm ~1 in 10^4-10^5)."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from scipy import stats

from analogai_deploy.analog.convert import analog_layers
from analogai_deploy.analog.layers import AnalogConv2d, AnalogLinear, AnalogState, noisy

N_STD = 5.0


def _layer(sigma=0.1, c=1.0, shape=(384, 512)):
    torch.manual_seed(0)
    lin = torch.nn.Linear(shape[1], shape[0])
    return AnalogLinear.from_digital(lin, AnalogState(sigma, c))


def _eps(layer) -> torch.Tensor:
    with torch.no_grad():
        return (noisy(layer.weight, layer.analog) - layer.weight).flatten()


def _is_standard_normal(z: torch.Tensor) -> None:
    n = z.numel()
    z = z.double()
    assert abs(z.mean().item()) < N_STD / math.sqrt(n)
    assert abs(z.std().item() - 1.0) < N_STD / math.sqrt(2 * n)
    assert stats.kstest(z[:200_000].numpy(), "norm").pvalue > 1e-4  # the shape too, not only two moments


def _uncorrelated(a: torch.Tensor, b: torch.Tensor) -> None:
    r = torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1].item()
    assert abs(r) < N_STD / math.sqrt(a.numel())


@pytest.mark.parametrize("sigma, c", [(0.1, 1.0), (0.35, 0.5)])
def test_noise_is_normal_with_the_layer_scale(sigma, c):
    layer = _layer(sigma, c)
    s = c * sigma * layer.weight.detach().abs().max().item()
    _is_standard_normal(_eps(layer) / s)


def test_noise_is_fresh_and_independent_per_pass():
    layer = _layer()
    draws = [_eps(layer) for _ in range(3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(draws[i], draws[j])
            _uncorrelated(draws[i], draws[j])
    # nor correlated with the weight itself, or with a shifted copy of the previous draw
    _uncorrelated(draws[0], layer.weight.detach().flatten())
    _uncorrelated(draws[1][1:], draws[0][:-1])


def test_every_client_copy_draws_its_own_noise():
    layer = _layer()
    _eps(layer)  # the original's buffer exists now; a copy must not share it
    clients = [copy.deepcopy(layer) for _ in range(3)]
    assert all(cl.analog._buffers == {} for cl in clients)
    draws = [_eps(cl) for cl in clients]
    s = 0.1 * layer.weight.detach().abs().max().item()
    for i, d in enumerate(draws):
        _is_standard_normal(d / s)
        for e in draws[i + 1:]:
            _uncorrelated(d, e)


def test_gradient_passes_straight_through_and_passes_do_not_clobber_each_other():
    torch.manual_seed(1)
    conv = AnalogConv2d.from_digital(torch.nn.Conv2d(4, 8, 3), AnalogState(0.2, 1.0, act_noise=0.05))
    x = torch.randn(5, 4, 9, 9)
    gs = [torch.randn(5, 8, 7, 7) for _ in range(3)]
    # three forward passes (as MSNAT's feedback loops), one backward: each pass keeps its own noisy weight
    outs = [conv(x) for _ in range(3)]
    assert not torch.equal(outs[0], outs[1])
    sum((o * g).sum() for o, g in zip(outs, gs)).backward()
    # conv is linear in W and the noise is a constant: the gradient is the clean conv's, pass by pass
    ref = torch.nn.Conv2d(4, 8, 3)
    ref.load_state_dict({"weight": conv.weight.detach(), "bias": conv.bias.detach()})
    sum((ref(x) * g).sum() for g in gs).backward()
    torch.testing.assert_close(conv.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(conv.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_torch_generator_fallback_has_the_same_statistics(monkeypatch):
    from analogai_deploy.hardware import native

    monkeypatch.setattr(native, "_lib", None)  # as on a machine without a C compiler, or on CUDA
    layer = _layer()
    first, second = _eps(layer), _eps(layer)
    s = 0.1 * layer.weight.detach().abs().max().item()
    _is_standard_normal(first / s)
    _uncorrelated(first, second)


def test_the_native_generator_is_used_here_and_follows_manual_seed():
    from analogai_deploy.hardware import native

    if native.library() is None:
        pytest.skip("no C compiler here: the torch fallback is tested above")
    layer = _layer()
    torch.manual_seed(3)
    a = _eps(layer)
    torch.manual_seed(3)
    assert torch.equal(a, _eps(layer))  # reproducible from torch's seed
    big = torch.zeros(1_000_003)  # odd length: the tail of the last block
    with torch.no_grad():
        z = noisy(big + 1.0, AnalogState(1.0, 1.0)) - 1.0
    _is_standard_normal(z)


def test_batched_clients_draw_independent_noise_at_their_own_level(mlp_pkg, tmp_path):
    from analogai_deploy import data, package
    from analogai_deploy.recovery.trainers import make_trainer
    from analogai_deploy.recovery.recipe import load

    pkg = package.load(mlp_pkg)
    rec = load("msnat", ["training.mode=batched", "training.cpu_threads=1"])
    ds = data.load("digits", input_shape=pkg.config["input"]["shape"])
    tr = make_trainer(pkg.model, rec, ds, tmp_path / "state", identity={})
    name, c = max(tr.analog_weights, key=lambda nc: tr.params[nc[0]].numel())
    w = tr.params[name].detach()
    first, second = (tr.noisy_params(tr.sigma_t)[name].detach() - w for _ in range(2))
    assert len(tr.sigmas) >= 3
    for k, sigma in enumerate(tr.sigmas):
        s = c * sigma * w[k].abs().max().item()
        if s == 0:
            assert torch.equal(first[k], torch.zeros_like(first[k]))
            continue
        _is_standard_normal(first[k].flatten() / s)
        _uncorrelated(first[k].flatten(), second[k].flatten())  # fresh per pass
        for j in range(k + 1, len(tr.sigmas)):
            _uncorrelated(first[k].flatten(), first[j].flatten())  # independent per client


def test_noise_buffers_follow_the_model_to_a_dtype():
    layer = _layer()
    _eps(layer)
    layer.double()
    assert noisy(layer.weight, layer.analog).dtype == torch.float64
    assert len(analog_layers(torch.nn.Sequential(layer))) == 1
