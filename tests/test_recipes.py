"""Recipes: every shipped one loads and is documented; validation; the seed's override names."""
from __future__ import annotations

import json

import pytest

from analogai_deploy.errors import UsageError
from analogai_deploy.recovery import recipe as R

SHIPPED = ["hwa_aihwkit", "msnat", "msnat_hw", "msnat_no_fi", "msnat_no_fl", "single_noise", "vanilla"]


def test_every_issue_recipe_is_shipped():
    assert sorted(R.shipped()) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_loads_documented_and_round_trips(name):
    r = R.load(name)
    assert r.name == name
    assert len(r.description) > 20
    assert R.shipped()[name].read_text().startswith("#")  # a comment saying what it is for
    again = R.Recipe.from_dict(json.loads(json.dumps(r.resolved())))
    assert again == r and again.sha256() == r.sha256()


def test_msnat_defaults_are_the_reference_constants():
    r = R.load("msnat")
    assert r.recovery.sigmas == [0.10, 0.15, 0.20, 0.25, 0.30]
    fb = r.recovery.feedback
    assert (fb.beta, fb.deltas, fb.gammas, fb.temperature) == (1e-3, [0.05, 0.10, 0.15], [1.0, 0.1, 0.01], 4.0)
    assert r.training.use_FI and r.training.use_FL
    assert r.recovery.fusion.weights == "uniform" and r.recovery.fusion.keep == 0.1
    assert r.recovery.optimizer.rho == 0.05


def test_ablations_differ_only_where_they_should():
    base = R.load("msnat").resolved()
    no_fi, no_fl = R.load("msnat_no_fi").resolved(), R.load("msnat_no_fl").resolved()
    assert not no_fi["training"]["use_FI"] and no_fi["training"]["use_FL"]
    assert no_fl["training"]["use_FI"] and not no_fl["training"]["use_FL"]
    for other in (no_fi, no_fl):
        assert other["recovery"] == base["recovery"]


def test_seed_override_names_take_effect():
    r = R.load("msnat", [
        "training.batch_size=256", "training.use_FI=False", "training.use_FL=false",
        "recovery.noise_0.act_inject.sigma=0.05", "recovery.noise_4.act_inject.sigma=0.4",
        "recovery.optimizer.sam=true", "recovery.optimizer.adaptive=True",
        "recovery.adversarial.FGSM.use=true", "recovery.adversarial.PGD.use=true", "recovery.qat=True",
    ])
    assert r.training.batch_size == 256
    assert r.training.use_FI is False and r.training.use_FL is False
    assert r.recovery.sigmas == [0.05, 0.15, 0.20, 0.25, 0.4]
    assert r.recovery.optimizer.sam and r.recovery.optimizer.adaptive
    assert r.recovery.adversarial.FGSM.use and r.recovery.adversarial.PGD.use
    assert r.recovery.qat is True
    assert r.sha256() != R.load("msnat").sha256()


def test_noise_levels_can_be_added_and_dropped():
    assert R.load("msnat", ["recovery.noise_5.act_inject.sigma=0.35"]).recovery.sigmas[-1] == 0.35
    assert R.load("msnat", ["recovery.noise_4=null", "recovery.noise_3=null"]).recovery.sigmas == [0.1, 0.15, 0.2]
    with pytest.raises(UsageError, match="without gaps"):
        R.load("msnat", ["recovery.noise_7.act_inject.sigma=0.5"])


@pytest.mark.parametrize("override, words", [
    ("training.batchsize=3", ["training.batchsize", "batch_size"]),
    ("recovery.feedbak.beta=1", ["recovery.feedbak", "feedback", "noise_0"]),
    ("recovery.adversarial.FGSM.eps_=1", ["eps"]),
    ("training.batch_size=big", ["integer"]),
    ("training.optimizer=rmsprop", ["adam", "sgd"]),
    ("training.rounds", ["dotted.key=value"]),
])
def test_bad_overrides_fail_with_a_fix(override, words):
    with pytest.raises(UsageError) as err:
        R.load("msnat", [override])
    text = str(err.value)
    assert all(w in text for w in words), text


def test_unknown_recipe_suggests_a_close_name():
    with pytest.raises(UsageError, match="msnat"):
        R.load("msnatt")


def test_hwa_refuses_msnat_only_features():
    with pytest.raises(UsageError, match="use_FL"):
        R.load("hwa_aihwkit", ["training.use_FL=true"])


def test_user_recipe_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("description: two levels\ntraining: {rounds: 3}\nrecovery:\n"
                 "  noise_0: {act_inject: {sigma: 0.1}}\n  noise_1: {act_inject: {sigma: 0.2}}\n")
    r = R.load(str(f), ["training.lr=0.01"])
    assert (r.name, r.training.rounds, r.training.lr, r.recovery.sigmas) == ("mine", 3, 0.01, [0.1, 0.2])
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainig: {rounds: 3}\n")
    with pytest.raises(UsageError, match="training"):
        R.load(str(bad))
    with pytest.raises(UsageError, match="not found"):
        R.load(str(tmp_path / "missing.yaml"))


def test_recipes_cli(cli):
    code, out, _ = cli("recipes", "list", "--json")
    assert code == 0 and [r["name"] for r in json.loads(out)] == SHIPPED
    code, out, _ = cli("recipes", "show", "msnat", "training.batch_size=256", "--json")
    data = json.loads(out)
    assert code == 0 and data["resolved"]["training"]["batch_size"] == 256
    assert data["sha256"] == R.load("msnat", ["training.batch_size=256"]).sha256()
    code, out, _ = cli("recipes", "show", "vanilla")
    assert code == 0 and "noise_0" in out and "sha256" in out
    code, _, err = cli("recipes", "show", "msnat", "training.nope=1")
    assert code == 2 and "valid keys" in err
    for args in (["recover", "--help"], ["recipes", "--help"], ["recipes", "show", "--help"]):
        code, out, _ = cli(*args)
        assert code == 0 and "Example" in out
