"""The zoo's gate cannot be fooled: every forgery of a certificate or of the model it names is refused.

Real certificates (zoo_helpers.certified_copy), edited the way a forger would: by hand, in the file.
Each refusal is one `error:` line (exit 1) at publish, at pull and, for the model binding, at load.
"""
from __future__ import annotations

import json
import random
import shutil

import pytest
from zoo_helpers import certified_copy, edit_certificate, edit_config

import analogai_deploy as ad
from analogai_deploy import package as pkgio
from analogai_deploy import zoo
from analogai_deploy.errors import AnalogAIError, PackageError
from analogai_deploy.zoo import gate


@pytest.fixture
def certified(tmp_path):
    return certified_copy(tmp_path / "digits-cnn")


def _one_line_refusal(code: int, err: str, *words: str) -> bool:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    return code == 1 and len(errors) == 1 and "Traceback" not in err and all(w in err for w in words)


def _stats(values, bounds=(0.0, 1.0)):
    from analogai_deploy.metrics import stats

    return stats(values, bounds)


def test_hand_edited_certificate_is_refused(cli, zoo_dir, certified):
    """passed: true and means of 99.9%, typed into certificate.json."""
    def forge(c):
        c["verdict"]["passed"] = True
        for r in c["results"]:
            r["mean"] = 0.999
    edit_certificate(certified, forge)
    code, _, err = cli("publish", certified)
    assert _one_line_refusal(code, err, "was edited", "per-repeat values")
    assert not (zoo_dir / "index.json").exists()


def test_the_gate_judges_with_certifys_own_rule(certified):
    """The zoo recomputes a certificate's verdict with certify's function: the same drop, the same verdict."""
    cert = json.loads((certified / pkgio.CERTIFICATE).read_text())
    recomputed = gate.verdict(cert, gate.Policy(), certified)
    assert recomputed["drop_pp"] == cert["verdict"]["drop_pp"] and recomputed["passed"] is cert["verdict"]["passed"]
    assert recomputed["rule"] == cert["verdict"]["rule"].replace(" pp at", " pp of accuracy at")


def test_spot_check_of_an_auto_repeat_certificate_runs_fixed_repeats(certified):
    """A certificate of `repeats=auto` (a ci_width in its settings) is spot-checked with the policy's fixed
    repeats: its config is changed with dataclasses.replace, which validates it again (ci_width goes)."""
    cert = json.loads((certified / pkgio.CERTIFICATE).read_text())
    cert["settings"].update(repeats="auto", ci_width=1.0)
    spot = gate.spot_check(certified, cert, gate.Policy(spot_repeats=3))
    assert spot["repeats"] == 3 and all(t["passed"] for t in spot["times"])


def test_consistently_forged_certificate_fails_the_spot_check(cli, zoo_dir, certified):
    """Values, means, CIs and minima all forged to agree with each other: only a new measurement shows it."""
    def forge(c):
        for r in c["results"]:
            r["values"] = [min(1.0, v + 0.05) for v in r["values"]]
            s = _stats(r["values"])
            r.update(mean=s["mean"], std=s["std"], ci95=s["ci95"], min=s["min"])
    edit_certificate(certified, forge)
    code, _, err = cli("publish", certified)
    assert _one_line_refusal(code, err, "spot check disagrees", "false-refusal rate")
    assert not (zoo_dir / "index.json").exists()


def test_replaced_ungated_certificate_is_refused(cli, zoo_dir, certified):
    """A package that failed its gate, certified again without one (the certificate is replaced)."""
    assert cli("certify", certified, "--times", "1s", "--repeats", "5", "--limit", "64", "-q")[0] == 0
    code, _, err = cli("publish", certified)
    assert _one_line_refusal(code, err, "has no gate", "--max-drop")


def test_refusal_lists_every_requirement_and_a_command_that_meets_them(cli, zoo_dir, certified):
    """No gate and too few repeats: one refusal names both, and its hint keeps the certificate's data and
    settings, so the command it gives, run as written, makes a certificate the zoo admits."""
    assert cli("certify", certified, "--data", "digits", "--times", "1s,1d", "--repeats", "2", "--limit", "48",
               "-q")[0] == 0
    code, _, err = cli("publish", certified)
    assert _one_line_refusal(code, err, "has no gate", "has 2 Monte Carlo repeats", "at least 5")
    hint = next(line for line in err.splitlines() if line.startswith("hint:"))
    command = hint.split("analogai-deploy ", 1)[1].split()
    assert command[:2] == ["certify", str(certified)]
    for flags in (["--data", "digits"], ["--limit", "48"], ["--times", "1s,1d"], ["--max-drop", "5"],
                  ["--repeats", "10"]):
        assert " ".join(flags) in " ".join(command), (flags, hint)
    assert cli(*command, "-q")[0] == 0
    code, _, err = cli("publish", certified)
    assert code == 0, err


def test_failing_and_too_loose_gates_are_refused(cli, zoo_dir, tmp_path):
    failing = certified_copy(tmp_path / "failing", passed=False)
    code, _, err = cli("publish", failing)
    assert _one_line_refusal(code, err, "fails its gate", "allowed 0 pp")
    # the certificate's stored verdict says failed; an edit to "passed" changes nothing: the zoo recomputes it
    edit_certificate(failing, lambda c: c["verdict"].update(passed=True, drop_pp=0.0))
    code, _, err = cli("publish", failing)
    assert _one_line_refusal(code, err, "fails its gate")
    loose = certified_copy(tmp_path / "loose", max_drop=50.0)
    code, _, err = cli("publish", loose)
    assert _one_line_refusal(code, err, "allows a drop of 50 pp of accuracy", "at most 5 pp")
    # a zoo whose owner allows that admits it
    assert cli("zoo", "policy", "--max-drop", "50", "--json")[0] == 0
    code, out, err = cli("publish", loose, "--json")
    assert code == 0, err
    assert json.loads(out)["gate"] == "max drop 50 pp of accuracy at 1d (lower 95% CI)"


def test_edited_num_classes_is_refused_at_publish_pull_and_load(cli, zoo_dir, certified):
    edited = certified.parent / "edited"
    shutil.copytree(certified, edited)
    edit_config(edited, lambda c: c.update(num_classes=7))
    code, _, err = cli("publish", edited)
    assert _one_line_refusal(code, err, "edited after certification", "num_classes")
    with pytest.raises(PackageError, match="num_classes"):
        ad.load(edited)
    # the same edit made inside the zoo, after publishing: pull refuses it
    assert cli("publish", certified, "--name", "digits")[0] == 0
    edit_config(zoo_dir / "digits", lambda c: c.update(num_classes=7))
    code, _, err = cli("pull", "digits")
    assert _one_line_refusal(code, err, "edited after certification", "num_classes")
    with pytest.raises(PackageError, match="num_classes"):
        zoo.pull("digits")


@pytest.mark.parametrize("section", ["input", "analog", "source", "placement"])
def test_every_model_defining_section_is_bound(certified, section):
    def change(c):
        c[section] = {**(c.get(section) or {}), "edited": True}
    edit_config(certified, change)
    with pytest.raises(PackageError, match=f"its {section} differs"):
        ad.load(certified)


def test_certificate_from_other_weights_is_refused(cli, zoo_dir, certified, tmp_path):
    other = certified_copy(tmp_path / "other", variant=1)
    shutil.copy(other / pkgio.CERTIFICATE, certified / pkgio.CERTIFICATE)
    code, _, err = cli("publish", certified)
    assert _one_line_refusal(code, err, "issued for other weights")
    with pytest.raises(PackageError, match="other weights"):
        ad.load(certified)


def test_certificate_without_model_binding_is_refused(cli, zoo_dir, certified):
    edit_certificate(certified, lambda c: (c.pop("model_sha256"), c.pop("model_sections")))
    code, _, err = cli("publish", certified)
    assert _one_line_refusal(code, err, "does not name the model", "certify")
    ad.load(certified)  # an older certificate does not stop a plain load


def test_pull_verify_reruns_the_spot_check(cli, zoo_dir, certified, tmp_path):
    assert cli("publish", certified, "--name", "digits")[0] == 0
    code, out, err = cli("pull", "digits", "--verify", "--json")
    assert code == 0, err
    assert json.loads(out)["spot_check"] == "passed"

    def forge(c):  # after publishing, in the zoo: consistent values, so only a measurement can tell
        for r in c["results"]:
            r["values"] = [min(1.0, v + 0.05) for v in r["values"]]
            s = _stats(r["values"])
            r.update(mean=s["mean"], std=s["std"], ci95=s["ci95"], min=s["min"])
    edit_certificate(zoo_dir / "digits", forge)
    code, _, err = cli("pull", "digits")  # the index records every file's sha256
    assert _one_line_refusal(code, err, "certificate.json differ from what its index records")
    index = json.loads((zoo_dir / "index.json").read_text())  # a forger who edits the index too
    index["entries"][0]["files"] = pkgio.read_config(zoo_dir / "digits")["files"]
    (zoo_dir / "index.json").write_text(json.dumps(index))
    assert cli("pull", "digits")[0] == 0  # without --verify the forgery is consistent
    code, _, err = cli("pull", "digits", "--verify")
    assert _one_line_refusal(code, err, "spot check disagrees")


def test_zoo_list_and_card_name_the_metric_and_the_gate(cli, zoo_dir, certified):
    assert cli("publish", certified, "--name", "digits")[0] == 0
    code, out, _ = cli("zoo", "list")
    assert code == 0 and "METRIC" in out and "accuracy" in out and "<=3 pp at 1d" in out
    card = (zoo_dir / "digits" / "README.md").read_text()
    assert "mean accuracy" in card and "Admitted to the zoo: gate max drop 3 pp of accuracy at 1d" in card
    assert "spot check of 3 fresh Monte Carlo repeats agreed" in card


# ---- the spot check's statistics -------------------------------------------------------------------------

def test_spot_check_false_refusal_rate_is_alpha_and_the_naive_rule_is_not():
    """Honest certificates (R = 10 repeats) and spot checks (r = 3) drawn from one normal distribution:
    the t-test refuses about alpha of them; 'the spot mean must lie inside the certificate's CI' refuses
    far more (the spot mean has its own noise)."""
    rng = random.Random(2026)
    trials, alpha = 4000, 0.01
    refused = naive = 0
    for _ in range(trials):
        cert = [rng.gauss(0.9, 0.01) for _ in range(10)]
        spot = [rng.gauss(0.9, 0.01) for _ in range(3)]
        refused += not gate.t_test(cert, spot, alpha)["passed"]
        lo, hi = _stats(cert)["ci95"]
        naive += not lo <= sum(spot) / 3 <= hi
    assert 0.002 < refused / trials < 0.025
    assert naive / trials > 0.15


def test_spot_check_detects_a_shift_of_two_percent():
    rng = random.Random(7)
    detected = sum(not gate.t_test([rng.gauss(0.95, 0.005) for _ in range(10)],
                                   [rng.gauss(0.93, 0.005) for _ in range(3)], 0.01)["passed"] for _ in range(500))
    assert detected / 500 > 0.95


def test_policy_rejects_bad_values(cli, zoo_dir):
    code, _, err = cli("zoo", "policy", "--spot-repeats", "1")
    assert code == 2 and "spot_repeats" in err
    with pytest.raises(AnalogAIError):
        gate.Policy(alpha=0.7)
