"""The mixed-signal mapping (outliers: digital) as a product: convert / recover record it, certify uses it and
states its cost, GPT-2's Conv1D splits too, and a missed text gate says what the split would recover."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import analogai_deploy as ad
from analogai_deploy import package
from analogai_deploy.certification import HINT_REPEATS
from analogai_deploy.analog.mapping import MappingConfig

from hf_models import gpt2_lm


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2")
    return ad.convert(f"hf:{gpt2_lm(root / 'src')}", output=root / "pkg").path


def _mapping(path):
    return package.section(json.loads((path / "config.json").read_text()), "mapping").to_dict()


def test_convert_records_the_split_and_certify_uses_it_by_default(cli, tmp_path):
    code, out, err = cli("convert", "mlp", "--num-classes", "10", "-o", tmp_path / "mlp", "--outliers", "digital",
                         "--outlier-std", "2.5")
    assert code == 0, err
    assert "outliers beyond 2.5 std digital" in out
    assert (_mapping(tmp_path / "mlp")["outliers"], _mapping(tmp_path / "mlp")["outlier_std"]) == ("digital", 2.5)
    cert = ad.certify(tmp_path / "mlp", device="ideal", engine="fast", repeats=1, times="1d", limit=32)
    m = cert["mapping"]
    assert (m["outliers"], m["outlier_std"], m["overridden"]) == ("digital", 2.5, {})
    assert cert.result("1d")["mean"] == pytest.approx(cert["digital"]["accuracy"], abs=1e-9)  # the split is exact
    # the card states the shares the certificate measured
    card = (tmp_path / "mlp" / "README.md").read_text()
    assert f"{m['digital_outliers']['weight_share']:.2%} of the" in card and "multiply-accumulates" in card
    assert "KiB as a sparse matrix (CSR: fp16 values" in card
    # the default stays pure analog, and a bad value is refused before anything is built
    assert cli("convert", "mlp", "--num-classes", "10", "-o", tmp_path / "plain")[0] == 0
    assert _mapping(tmp_path / "plain")["outliers"] == "none"
    code, _, err = cli("convert", "mlp", "-o", tmp_path / "bad", "--outliers", "sparse")
    assert code == 2 and "digital" in err and not (tmp_path / "bad").exists()


def test_certificate_shares_equal_an_independent_count(lenet_pkg):
    """LeNet: the split acts on its Linear layers only, while its convolutions hold most MACs. (Its weights are
    initialised uniform, within 1.73 std: a bound of 1.5 std finds outliers.)"""
    k = 1.5
    cert = ad.certify(lenet_pkg, device="ideal", engine="fast", repeats=1, times="1d", limit=16, write=False,
                      mapping=MappingConfig(outliers="digital", outlier_std=k, input_scaling="none"))
    got = cert["mapping"]["digital_outliers"]
    model = ad.load(lenet_pkg)
    from analogai_deploy.analog.convert import to_digital

    digital = to_digital(model.model).eval()
    positions = {}
    hooks = [m.register_forward_hook(lambda m, a, y, n=n: positions.__setitem__(n, y[0, 0].numel()))
             for n, m in digital.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        digital(torch.zeros(1, *json.loads((lenet_pkg / "config.json").read_text())["input"]["shape"]))
    for h in hooks:
        h.remove()
    nnz = rows = weights = macs = digital_macs = 0
    for name, mod in digital.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            w = mod.weight.detach()
            weights += w.numel()
            macs += w.numel() * positions[name]
            if isinstance(mod, torch.nn.Linear):
                n = int((w.abs() > k * w.std(1, keepdim=True)).sum())
                nnz, rows, digital_macs = nnz + n, rows + w.shape[0] + 1, digital_macs + n
    assert got["digital_weights"] == nnz > 0 and got["analog_weights"] == weights
    assert got["weight_share"] == pytest.approx(nnz / weights)
    assert got["mac_share"] == pytest.approx(digital_macs / macs) and got["mac_share"] < got["weight_share"] / 3
    assert got["sparse_bytes"] == nnz * (2 + 4) + rows * 4 and got["per"] == "sample"


def test_gpt2_conv1d_splits_too_in_certify_and_in_training(gpt2):
    k = 2.0
    cert = ad.certify(gpt2, device="ideal", repeats=1, times="1d", limit=4, write=False,  # the weights as stored
                      mapping=MappingConfig(outliers="digital", outlier_std=k, input_scaling="none"))
    got = cert["mapping"]["digital_outliers"]
    assert cert.result("1d")["mean"] == pytest.approx(cert["digital"]["next_token_agreement"], abs=1e-9)
    fast = ad.certify(gpt2, device="ideal", repeats=1, times="1d", limit=4, write=False, engine="fast",
                      mapping=MappingConfig(outliers="digital", outlier_std=k, input_scaling="none"))
    assert fast.result("1d")["mean"] == pytest.approx(1.0) and fast["mapping"]["digital_outliers"] == got
    placement = ad.load(gpt2).placement
    split = [e for e in placement.analog if e.kind in ("linear", "hf_conv1d")]
    assert any(e.kind == "hf_conv1d" for e in split) and got["layers"] == len(split)
    from analogai_deploy.analog.convert import to_digital

    digital = to_digital(ad.load(gpt2).model)
    nnz = 0
    for e in split:  # Conv1D holds [in, out]: a tile column is a column of its weight
        w = digital.get_submodule(e.name).weight.detach()
        w = w if e.kind == "linear" else w.t()
        nnz += int((w.abs() > k * w.std(1, keepdim=True)).sum())
    assert got["digital_weights"] == nnz > 0 and got["per"] == "token"
    assert got["weight_share"] == pytest.approx(nnz / sum(e.tile_weights for e in placement.analog))
    # training: an analog Conv1D with the split sums back to the digital layer and moves its outliers digital
    from analogai_deploy.analog.registry import hf_conv1d
    from analogai_deploy.hardware.noise import tile_weights
    from analogai_deploy.recovery import hardware_noise
    from analogai_deploy.recovery.recipe import load as load_recipe

    conv = digital.get_submodule(split[0].name)
    analog = ad.load(gpt2).model.get_submodule(split[0].name)
    assert type(analog).__name__ == "AnalogHFConv1D" and hf_conv1d() is not None
    rec = load_recipe("vanilla", ["noise.scale=column", "noise.outliers=digital", f"noise.outlier_std={k}"])
    hardware_noise.apply(analog, rec.noise, rec.io)
    analog.analog.sigma = 0.0
    x = torch.randn(3, 5, conv.weight.shape[0])
    with torch.no_grad():
        assert torch.allclose(analog(x), conv(x), atol=1e-5)
        w, rest = tile_weights(analog.weight, analog.analog.hw, channel_dim=1, outliers=True)
    assert rest is not None and int((rest != 0).sum()) > 0 and w.abs().amax(0).lt(analog.weight.abs().amax(0)).any()


def test_a_missed_text_gate_says_what_the_split_measures(gpt2, cli, tmp_path):
    path = tmp_path / "gpt2"
    shutil.copytree(gpt2, path)
    settings = dict(times="1d", limit=8, seed=3, write=False)
    cert = ad.certify(path, repeats=4, max_drop=0.0, **settings)
    assert cert.passed is False and cert.split_hint is not None
    hint = cert.split_hint
    direct = ad.certify(path, repeats=HINT_REPEATS, mapping=MappingConfig(outliers="digital"), **settings)
    assert hint["repeats"] == HINT_REPEATS and hint["seeds"] == direct["seeds"]
    assert hint["mean"] == pytest.approx(direct.result("1d")["mean"], abs=1e-12)
    assert hint["weight_share"] == direct["mapping"]["digital_outliers"]["weight_share"]
    assert hint["pure_analog_mean"] == pytest.approx(sum(cert.result("1d")["values"][:HINT_REPEATS]) / HINT_REPEATS)
    # one line on the CLI, and a field in --json; none where the split already ran or the gate passed
    code, out, err = cli("certify", path, "--times", "1d", "--limit", "8", "--seed", "3", "--repeats", "4",
                         "--max-drop", "0", "--json")
    assert code == 1 and json.loads(out)["split_hint"]["mean"] == pytest.approx(hint["mean"])
    lines = [ln for ln in err.splitlines() if "digital-outlier split, measured" in ln]
    assert len(lines) == 1 and f"first {HINT_REPEATS} seeds" in lines[0]
    assert ad.certify(path, repeats=2, max_drop=0.0, mapping=MappingConfig(outliers="digital"),
                      **settings).split_hint is None
    assert ad.certify(path, repeats=2, max_drop=100.0, **settings).split_hint is None


def test_recover_records_the_split_and_trains_with_a_recorded_one(mlp_pkg, cli, tmp_path):
    quick = ["training.rounds=1", "training.epochs_per_round=1"]
    code, _, err = cli("recover", mlp_pkg, "--recipe", "vanilla", "-o", tmp_path / "r1", "--outliers", "digital",
                       "--outlier-std", "2.5", *quick)
    assert code == 0, err
    assert (_mapping(tmp_path / "r1")["outliers"], _mapping(tmp_path / "r1")["outlier_std"]) == ("digital", 2.5)
    # a package converted with the split: a hardware-noise recipe trains with it, any recipe keeps the record
    converted = ad.convert("mlp", output=tmp_path / "split", num_classes=10,
                           mapping=MappingConfig(outliers="digital", outlier_std=2.0)).path
    hw = ad.recover(converted, "vanilla", "digits", output=tmp_path / "hw", overrides=[*quick, "noise.scale=column"])
    noise = hw.config["recipe"]["resolved"]["noise"]
    assert (noise["outliers"], noise["outlier_std"]) == ("digital", 2.0)
    assert (_mapping(tmp_path / "hw")["outliers"], _mapping(tmp_path / "hw")["outlier_std"]) == ("digital", 2.0)
    seed = ad.recover(converted, "vanilla", "digits", output=tmp_path / "seed", overrides=quick)
    assert "noise" not in seed.config["recipe"]["resolved"] and _mapping(tmp_path / "seed")["outliers"] == "digital"
    # and recover --outliers none drops it
    assert cli("recover", converted, "--recipe", "vanilla", "-o", tmp_path / "none", "--outliers", "none",
               *quick)[0] == 0
    assert _mapping(tmp_path / "none")["outliers"] == "none"


def test_a_split_that_covers_almost_no_analog_weight_warns_at_convert_recover_and_certify(cli, tmp_path):
    """A CNN's convolutions keep every weight on tiles: asking for the split there says so, once per stage,
    and the certificate (so the card) carries it; a Linear model's split does not warn."""
    said = "acts on Linear and GPT-2 Conv1D layers only: here 0 of 2 analog layers, 0.00% of the analog weights"
    code, _, err = cli("convert", "lenet", "--exclude-type", "Linear", "-o", tmp_path / "convs", "--outliers",
                       "digital")
    assert code == 0 and said in err and "(Conv2d) keep every weight on the tiles" in err, err
    code, _, err = cli("recover", tmp_path / "convs", "--recipe", "vanilla", "--data", "digits", "-o",
                       tmp_path / "rec", "training.rounds=1", "training.epochs_per_round=1")
    assert code == 0 and said in err, err
    code, _, err = cli("certify", tmp_path / "rec", "--limit", "16", "--repeats", "2", "--times", "1s")
    assert code == 0 and said in err, err
    certificate = json.loads((tmp_path / "rec" / "certificate.json").read_text())
    assert any(said in w for w in certificate["warnings"])
    code, _, err = cli("convert", "mlp", "--num-classes", "10", "-o", tmp_path / "mlp", "--outliers", "digital")
    assert code == 0 and "acts on Linear" not in err, err


def test_macs_count_every_analog_kind():
    """Analog MACs per sample: a convolution per output position, attention per query / key / value token."""
    from torch import nn

    from analogai_deploy.analog.placement import plan
    from analogai_deploy.analog import outliers

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(3, 16, 3)  # 10 -> 8 positions
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True, kdim=8, vdim=8)
            self.head = nn.Linear(16, 4)

        def forward(self, x):
            h = self.conv(x).transpose(1, 2)  # (batch, 8 tokens, 16)
            return self.head(self.attn(h, h[..., :8], h[..., :8], need_weights=False)[0])

    net = Net().eval()
    placement = plan(net)
    vectors, per = outliers.macs_per_vector(net, placement, torch.randn(2, 3, 10))
    cost = outliers.cost({}, placement, vectors, per)
    conv, attn, head = 16 * 9 * 8, (16 * 16 + 16 * 8 + 16 * 8 + 16 * 16) * 8, 16 * 4 * 8
    assert per == "sample" and cost["analog_macs"] == conv + attn + head
    assert cost["analog_weights"] == 16 * 9 + 16 * 16 * 2 + 16 * 8 * 2 + 16 * 4 and cost["mac_share"] == 0.0
