"""Recipes: every shipped one loads and is documented; validation; the seed's override names."""
from __future__ import annotations

import json

import pytest

from analogai_deploy.errors import UsageError
from analogai_deploy.recovery import recipe as R

SHIPPED = ["afm", "hwa_aihwkit", "msnat", "msnat_afm", "msnat_hw", "msnat_no_fi", "msnat_no_fl", "single_noise",
           "vanilla"]


def test_every_issue_recipe_is_shipped():
    assert sorted(R.shipped()) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipe_loads_documented_and_round_trips(name):
    r = R.load(name)
    assert r.name == name
    assert len(r.description) > 20
    assert R.shipped()[name].read_text().startswith("#")  # a comment saying what it is for
    again = R.Recipe.from_dict(json.loads(json.dumps(r.to_dict())))
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
    base = R.load("msnat").to_dict()
    no_fi, no_fl = R.load("msnat_no_fi").to_dict(), R.load("msnat_no_fl").to_dict()
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


def test_the_documented_drop_and_dropping_the_first_level(cli):
    # docs/recover.md: recovery.noise_K.act_inject.sigma=null drops level K; the first level may go too
    code, out, err = cli("recipes", "show", "msnat", "recovery.noise_4.act_inject.sigma=null", "--json")
    assert code == 0, err
    assert [v["act_inject"]["sigma"] for k, v in json.loads(out)["resolved"]["recovery"].items() if k.startswith("noise_")] == [
        0.1, 0.15, 0.2, 0.25]
    assert R.load("msnat", ["recovery.noise_0=null"]).recovery.sigmas == [0.15, 0.2, 0.25, 0.3]
    assert R.load("msnat", ["recovery.noise_0.act_inject.sigma=null"]).recovery.sigmas == [0.15, 0.2, 0.25, 0.3]
    code, _, err = cli("recipes", "show", "msnat", *(f"recovery.noise_{k}=null" for k in range(5)))
    assert code == 2 and "every noise level (recovery.noise_0 ... noise_4) was dropped" in err


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


def _without_text(name):
    data, _ = R.raw(name)
    data.pop(R.TEXT_SECTION, None)
    return R.Recipe.from_dict(data)


@pytest.mark.parametrize("name", SHIPPED)
def test_text_section_leaves_the_image_recipe_alone(name):
    r = R.load(name)
    assert r.variant == "" and "variant" not in r.to_dict()
    assert r.sha256() == _without_text(name).sha256()  # the section changes nothing for image packages


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_recipe_has_transformer_levels(name):
    image, text = R.load(name), R.load(name, text=True)
    assert text.variant == "text" and text.name == name and text.sha256() != image.sha256()
    again = R.Recipe.from_dict(json.loads(json.dumps(text.to_dict())))
    assert again == text and again.sha256() == text.sha256()
    assert text.training.lr < image.training.lr  # fine-tuning a pretrained transformer, not training a CNN
    if image.training.engine == "aihwkit_hwa":
        assert text.recovery.hwa.w_noise < image.recovery.hwa.w_noise
    else:  # the method's structure stays; only its levels move
        assert len(text.recovery.sigmas) == len(image.recovery.sigmas)
        assert (text.training.use_FI, text.training.use_FL) == (image.training.use_FI, image.training.use_FL)
        if name in ("afm", "msnat_afm"):  # AFM's level is an LLM's own (a Llama's): the same on both
            assert text.recovery.sigmas == image.recovery.sigmas and text.noise == image.noise
        elif max(image.recovery.sigmas) > 0:
            assert max(text.recovery.sigmas) < max(image.recovery.sigmas)


def test_text_section_merges_under_the_users_overrides(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("training: {rounds: 7, lr: 0.01}\nrecovery:\n  noise_0: {act_inject: {sigma: 0.1}}\n"
                 "  noise_1: {act_inject: {sigma: 0.2}}\n  noise_2: {act_inject: {sigma: 0.3}}\n"
                 "text:\n  training: {lr: 1.0e-4}\n  recovery:\n    noise_0: {act_inject: {sigma: 0.05}}\n")
    r = R.load(str(f), ["training.rounds=2"], text=True)
    # nested keys merge (rounds kept), noise levels are replaced as a set (K 3 -> 1), overrides win
    assert (r.training.rounds, r.training.lr, r.recovery.sigmas, r.variant) == (2, 1e-4, [0.05], "text")
    assert R.load(str(f), ["training.lr=0.5"], text=True).training.lr == 0.5
    assert R.load(str(f)).recovery.sigmas == [0.1, 0.2, 0.3]


def test_a_typo_in_the_text_section_is_reported_for_image_packages_too(tmp_path):
    f = tmp_path / "typo.yaml"
    f.write_text("training: {rounds: 3}\ntext:\n  training: {lrr: 1.0e-4}\n")
    with pytest.raises(UsageError, match="text: section.*lrr"):
        R.load(str(f))
    f.write_text("training: {rounds: 3}\ntext: 5\n")
    with pytest.raises(UsageError, match="text: section must map"):
        R.load(str(f))


def test_recipes_show_text(cli):
    code, out, _ = cli("recipes", "show", "msnat", "--text", "--json")
    data = json.loads(out)
    assert code == 0 and data["resolved"]["variant"] == "text"
    assert data["sha256"] == R.load("msnat", text=True).sha256() != R.load("msnat").sha256()


def test_noise_scale_speaks_the_mappings_words_and_still_reads_the_old_ones(tmp_path):
    """noise.scale takes the mapping's weight_scaling words (tile / column); a recipe file written with the
    words recipes used before (tensor / channel) loads as the same recipe."""
    from analogai_deploy.recovery.hardware_noise import trained_mapping
    from analogai_deploy.recovery.recipe_noise import NoiseModelConfig

    old = tmp_path / "old.yaml"
    old.write_text(R.shipped()["msnat_hw"].read_text().replace("scale: column ", "scale: channel "))
    assert "scale: channel" in old.read_text()
    rec, new = R.load(old), R.load("msnat_hw")
    assert rec.noise.scale == "column" and rec.to_dict() == new.to_dict() and rec.sha256() == new.sha256()
    assert trained_mapping(rec.noise, rec.io)["weight_scaling"] == "column"  # the mapping's word, as it is
    assert R.load("msnat_hw", ["noise.scale=tensor"]).noise.scale == "tile"
    assert NoiseModelConfig(scale="channel").scale == "column"
    with pytest.raises(UsageError, match="noise.scale 'row'"):
        R.load("msnat_hw", ["noise.scale=row"])


@pytest.mark.parametrize("name, clients, passes", [("msnat", 5, 4), ("msnat_no_fi", 1, 4), ("msnat_no_fl", 5, 1),
                                                   ("single_noise", 1, 1), ("vanilla", 1, 1)])
def test_a_recipe_says_its_clients_and_kept_passes_once(name, clients, passes):
    """How many FI clients a round trains and how many passes a step keeps: read by the trainers, the memory
    check and the ablation's budgets alike."""
    r = R.load(name)
    assert (r.clients, r.passes) == (clients, passes)
    assert ("FI=on" in r.summary()) == (clients > 1)


def test_a_mistake_in_the_users_recipe_file_names_the_file(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\ntraining:\n  batch_sise: 32\n")
    with pytest.raises(UsageError, match=r"mine\.yaml: unknown key 'training\.batch_sise'.*did you mean: batch_size"):
        R.load(mine)
    mine.write_text("name: mine\ntraining:\n  rounds: 3\n")
    with pytest.raises(UsageError, match=r"^unknown key 'training\.bogus'"):  # the override's mistake, not the file's
        R.load(mine, ["training.bogus=1"])
    assert R.load(mine, ["training.rounds=2"]).training.rounds == 2
