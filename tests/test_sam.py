"""SAM / adaptive SAM: the two-pass update, weight restoration, optimizer state, config checks."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from analogai_deploy.errors import UsageError
from analogai_deploy.recovery.sam import SAM, SamConfig


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.randn(16, 5, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    return model, x, y


def _grads(model, x, y):
    loss = F.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, list(model.parameters()))


def _perturbation(params, grads, rho, adaptive):
    scaled = [p.abs() * g if adaptive else g for p, g in zip(params, grads)]
    norm = torch.sqrt(sum((s**2).sum() for s in scaled))
    return [(p * p if adaptive else 1.0) * g * rho / (norm + 1e-12) for p, g in zip(params, grads)]


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_steps_with_the_gradient_at_the_perturbed_point(adaptive):
    rho, lr = 0.3, 0.5
    model, x, y = _problem()
    w0 = [p.detach().clone() for p in model.parameters()]

    # expected, computed by hand: e(w), the gradient at w + e, one SGD step from w with it
    g0 = _grads(model, x, y)
    e = _perturbation(w0, g0, rho, adaptive)
    with torch.no_grad():
        for p, d in zip(model.parameters(), e):
            p.add_(d)
    g1 = _grads(model, x, y)
    with torch.no_grad():
        for p, w in zip(model.parameters(), w0):
            p.copy_(w)
    expected = [w - lr * g for w, g in zip(w0, g1)]
    plain_sgd = [w - lr * g for w, g in zip(w0, g0)]

    opt = SAM(torch.optim.SGD(model.parameters(), lr=lr), rho=rho, adaptive=adaptive)
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    for p, w, d in zip(model.parameters(), w0, e):
        torch.testing.assert_close(p.detach(), w + d)  # moved to w + e(w)
    F.cross_entropy(model(x), y).backward()
    opt.second_step(zero_grad=True)

    for p, want in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), want)
    assert any(not torch.allclose(p, q) for p, q in zip(model.parameters(), plain_sgd))


def test_second_step_restores_the_weights_exactly():
    model, x, y = _problem(1)
    w0 = [p.detach().clone() for p in model.parameters()]
    opt = SAM(torch.optim.SGD(model.parameters(), lr=0.0), rho=0.5)
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    assert any(not torch.equal(p, w) for p, w in zip(model.parameters(), w0))
    F.cross_entropy(model(x), y).backward()
    opt.second_step()
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), w0))


def test_closure_step_matches_the_two_calls():
    a, x, y = _problem(2)
    b, _, _ = _problem(2)
    opt_a = SAM(torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), rho=0.05)
    opt_b = SAM(torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9), rho=0.05)
    for _ in range(3):
        F.cross_entropy(a(x), y).backward()
        opt_a.first_step(zero_grad=True)
        F.cross_entropy(a(x), y).backward()
        opt_a.second_step(zero_grad=True)

        def closure():
            loss = F.cross_entropy(b(x), y)
            loss.backward()
            return loss

        opt_b.step(closure)
        opt_b.zero_grad()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_state_dict_covers_the_base_optimizer():
    model, x, y = _problem(3)
    opt = SAM(torch.optim.Adam(model.parameters(), lr=1e-2), rho=0.05)
    for _ in range(2):
        F.cross_entropy(model(x), y).backward()
        opt.first_step(zero_grad=True)
        F.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)
    state = opt.state_dict()
    fresh = SAM(torch.optim.Adam(model.parameters(), lr=1e-2), rho=0.05)
    fresh.load_state_dict(state)
    first = next(iter(model.parameters()))
    torch.testing.assert_close(fresh.state[first]["exp_avg"], opt.state[first]["exp_avg"])
    assert fresh.param_groups[0]["lr"] == 1e-2


def test_protocol_misuse_is_caught():
    model, x, y = _problem()
    opt = SAM(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(RuntimeError, match="before first_step"):
        opt.second_step()
    F.cross_entropy(model(x), y).backward()
    opt.first_step()
    with pytest.raises(RuntimeError, match="twice"):
        opt.first_step()


def test_sam_trains_an_analog_model_under_noise():
    from analogai_deploy.analog.convert import convert, noise
    from analogai_deploy.analog.config import AnalogConfig

    torch.manual_seed(0)
    model, x, y = _problem(4)
    convert(model, AnalogConfig())
    opt = SAM(torch.optim.SGD(model.parameters(), lr=0.2), rho=0.05, adaptive=True)
    with torch.no_grad():
        before = F.cross_entropy(model(x), y).item()
    with noise(model, 0.1):
        for _ in range(40):
            F.cross_entropy(model(x), y).backward()
            opt.first_step(zero_grad=True)
            F.cross_entropy(model(x), y).backward()
            opt.second_step(zero_grad=True)
    with torch.no_grad():
        assert F.cross_entropy(model(x), y).item() < 0.7 * before


def test_config_defaults_names_and_checks():
    cfg = SamConfig.from_dict({"sam": "true", "adaptive": "false"})
    assert (cfg.sam, cfg.adaptive, cfg.rho) == (True, False, 0.05)
    assert SamConfig().sam is False
    with pytest.raises(UsageError, match="adaptive=true needs recovery.optimizer.sam=true"):
        SamConfig.from_dict({"adaptive": True})
    with pytest.raises(UsageError, match="rho must be > 0"):
        SamConfig(sam=True, rho=0.0)
    with pytest.raises(UsageError, match="unknown key 'rhoo'"):
        SamConfig.from_dict({"rhoo": 0.1})
    base = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    assert SAM.from_config(base, SamConfig()) is base
    wrapped = SAM.from_config(base, SamConfig(sam=True, adaptive=True, rho=0.5))
    assert isinstance(wrapped, SAM) and wrapped.adaptive and wrapped.rho == 0.5
