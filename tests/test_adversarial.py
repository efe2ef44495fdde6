"""FGSM / PGD adversarial training: bounds in pixel space, the weighted loss, side effects, config checks."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from analogai_deploy.errors import UsageError
from analogai_deploy.recovery import adversarial
from analogai_deploy.recovery.adversarial import AdversarialConfig, adversarial_loss, fgsm, pgd


def loss_fn(model, x, y):
    return F.cross_entropy(model(x), y)


@pytest.fixture(scope="module")
def digits():
    from analogai_deploy.data import load

    return load("digits", input_shape=[1, 8, 8])


@pytest.fixture
def lenet():
    from analogai_deploy.analog.config import AnalogConfig
    from analogai_deploy.analog.convert import convert
    from analogai_deploy.sources.builtin import lenet

    torch.manual_seed(0)
    model = lenet(num_classes=10)
    convert(model, AnalogConfig(sigma=0.05))
    return model.train()


def _batch(digits, n=64):
    x, y = digits.train.tensors
    return x[:n], y[:n]


def _pixels(x, digits):
    mean = torch.tensor(digits.mean).view(-1, 1, 1)
    std = torch.tensor(digits.std).view(-1, 1, 1)
    return x * std + mean


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_the_eps_ball_in_pixel_space_and_in_the_pixel_range(digits, lenet, random_start):
    x, y = _batch(digits)
    low, high = digits.pixel_bounds()
    eps = 0.1
    adv = pgd(lenet, loss_fn, x, y, eps=eps, steps=5, alpha=0.04, random_start=random_start,
              low=low, high=high, std=digits.std_tensor)
    px, padv = _pixels(x, digits), _pixels(adv, digits)
    delta = (padv - px).abs()
    assert delta.max() <= eps + 1e-5
    assert delta.max() >= eps - 1e-5  # it really uses the budget
    assert padv.min() >= -1e-5 and padv.max() <= 1 + 1e-5
    # digits have many black pixels: a perturbation that may only brighten them is still taken there
    black = px < 1e-6
    assert black.any() and (padv[black] > 1e-3).any()
    with torch.no_grad():
        assert loss_fn(lenet, adv, y) > loss_fn(lenet, x, y)


def test_fgsm_moves_every_free_pixel_by_eps(digits, lenet):
    x, y = _batch(digits)
    low, high = digits.pixel_bounds()
    adv = fgsm(lenet, loss_fn, x, y, 0.05, low, high, digits.std_tensor)
    px, padv = _pixels(x, digits), _pixels(adv, digits)
    delta = (padv - px).abs()
    inside = (px > 0.05 + 1e-4) & (px < 0.95 - 1e-4)
    torch.testing.assert_close(delta[inside], torch.full_like(delta[inside], 0.05), atol=1e-5, rtol=0)
    assert padv.min() >= -1e-5 and padv.max() <= 1 + 1e-5


def test_attacks_leave_gradients_and_running_stats_alone(digits, lenet):
    x, y = _batch(digits)
    low, high = digits.pixel_bounds()
    bn = lenet[1]
    lenet[5].momentum = None  # cumulative averaging must be left alone too
    before = {k: v.clone() for k, v in lenet.state_dict().items()}
    pgd(lenet, loss_fn, x, y, 0.03, 3, 0.01, True, low, high, digits.std_tensor)
    fgsm(lenet, loss_fn, x, y, 0.03, low, high, digits.std_tensor)
    assert all(p.grad is None for p in lenet.parameters())
    assert all(torch.equal(v, before[k]) for k, v in lenet.state_dict().items())
    lenet(x)  # a normal training pass does move them (so the check above could fail)
    assert not torch.equal(bn.running_mean, before["1.running_mean"])


def test_adversarial_loss_is_the_weighted_sum(digits, lenet):
    from analogai_deploy.analog.convert import noise_off

    x, y = _batch(digits, 32)
    low, high = digits.pixel_bounds()
    assert adversarial_loss(lenet, loss_fn, x, y, AdversarialConfig(), low, high, digits.std_tensor) is None
    cfg = AdversarialConfig.from_dict({"FGSM": {"use": True, "weight": 0.2},
                                       "PGD": {"use": True, "random_start": False, "steps": 2, "weight": 0.05}})
    with noise_off(lenet):  # deterministic forward passes
        got = adversarial_loss(lenet, loss_fn, x, y, cfg, low, high, digits.std_tensor)
        x_f = fgsm(lenet, loss_fn, x, y, 0.03, low, high, digits.std_tensor)
        x_p = pgd(lenet, loss_fn, x, y, 0.03, 2, 0.01, False, low, high, digits.std_tensor)
        want = 0.2 * loss_fn(lenet, x_f, y) + 0.05 * loss_fn(lenet, x_p, y)
    torch.testing.assert_close(got, want)
    got.backward()  # differentiable w.r.t. the weights
    assert all(p.grad is not None for p in lenet.parameters() if p.requires_grad)


def test_qat_ranges_do_not_move_while_attacking(digits, lenet):
    from analogai_deploy.analog import qat

    qat.attach(lenet, qat.QuantConfig())
    x, y = _batch(digits)
    lenet(x)  # one training batch sets the ranges
    ranges = [l.analog.input_quant.act_max.clone() for _, l in qat.quantized_layers(lenet)]
    low, high = digits.pixel_bounds()
    pgd(lenet, loss_fn, x, y, 0.3, 3, 0.1, True, low, high, digits.std_tensor)
    assert all(torch.equal(r, l.analog.input_quant.act_max) for r, (_, l) in zip(ranges, qat.quantized_layers(lenet)))


def test_config_uses_the_seed_names_and_checks_values():
    cfg = AdversarialConfig.from_dict({"FGSM": {"use": "true"}, "PGD": {"use": "false", "steps": "5"}})
    assert cfg.FGSM.use and cfg.enabled and not cfg.PGD.use and cfg.PGD.steps == 5
    d = AdversarialConfig()
    assert (d.FGSM.eps, d.FGSM.weight) == (0.03, 0.2)
    assert (d.PGD.eps, d.PGD.steps, d.PGD.alpha, d.PGD.random_start, d.PGD.weight) == (0.03, 10, 0.01, True, 0.05)
    with pytest.raises(UsageError, match="did you mean: PGD"):
        AdversarialConfig.from_dict({"PGDD": {"use": True}})
    with pytest.raises(UsageError, match=r"PGD.steps must be >= 1"):
        AdversarialConfig.from_dict({"PGD": {"use": True, "steps": 0}})
    with pytest.raises(UsageError, match=r"FGSM.eps must be in \(0, 1\]"):
        AdversarialConfig.from_dict({"FGSM": {"use": True, "eps": 8}})
    with pytest.raises(UsageError, match="weight must be >= 0"):
        adversarial.FGSMConfig(weight=-1)


def test_token_inputs_are_refused():
    from torch import nn

    model = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(8, 2))
    x = torch.randint(0, 10, (3, 2))
    with pytest.raises(UsageError, match="token ids"):
        adversarial_loss(model, loss_fn, x, torch.zeros(3, dtype=torch.long),
                         AdversarialConfig.from_dict({"FGSM": {"use": True}}))


TINY = {"training.rounds": 1, "training.batch_size": 128, "recovery.noise_2": None, "recovery.noise_3": None,
        "recovery.noise_4": None, "training.cpu_threads": 1}


def test_msnat_with_adaptive_sam_fgsm_and_pgd_end_to_end(mlp_pkg, tmp_path):
    import analogai_deploy as ad

    out = ad.recover(mlp_pkg, "msnat", "digits", output=tmp_path / "mlp-adv", overrides={
        **TINY, "recovery.optimizer.sam": True, "recovery.optimizer.adaptive": True, "recovery.optimizer.rho": 0.5,
        "recovery.adversarial.FGSM.use": True, "recovery.adversarial.PGD.use": True,
        "recovery.adversarial.PGD.steps": 2})
    resolved = out.config["recipe"]["resolved"]["recovery"]
    assert resolved["adversarial"]["FGSM"]["use"] and resolved["adversarial"]["PGD"]["use"]
    assert resolved["optimizer"] == {"sam": True, "adaptive": True, "rho": 0.5}
    assert out.config["training"]["best"]["val_clean_acc"] > 0.3  # it learned something in one round
    assert "quantization" not in out.config


@pytest.mark.slow
@pytest.mark.parametrize("switch", [
    {"recovery.optimizer.sam": True},
    {"recovery.optimizer.sam": True, "recovery.optimizer.adaptive": True},
    {"recovery.adversarial.FGSM.use": True},
    {"recovery.adversarial.PGD.use": True, "recovery.adversarial.PGD.steps": 3},
    {"recovery.qat": True},
])
def test_each_switch_alone_with_msnat(lenet_pkg, tmp_path, switch):
    import analogai_deploy as ad

    out = ad.recover(lenet_pkg, "msnat", "digits", output=tmp_path / "out", overrides={**TINY, **switch})
    assert out.config["training"]["best"]["val_clean_acc"] > 0.2
    assert ("quantization" in out.config) == bool(switch.get("recovery.qat"))
