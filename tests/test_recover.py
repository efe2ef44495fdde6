"""`recover` end to end on digits with a small CNN (LeNet, with BatchNorm) and an MLP, plus MSNAT's pieces."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import analogai_deploy as ad
from analogai_deploy import package
from analogai_deploy.errors import OperationFailed, UsageError
from analogai_deploy.recovery import Interrupted, msnat, recipe as R
from analogai_deploy.recovery.objectives import Objective

FAST = ["training.rounds=1", "training.cpu_threads=1"]
# two noise levels instead of five: the same code paths at 40% of the cost
TWO = ["recovery.noise_2=null", "recovery.noise_3=null", "recovery.noise_4=null"]


@pytest.fixture(scope="module")
def digits():
    from analogai_deploy import data

    return data.load("digits", input_shape=[1, 8, 8])


def _weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("name, source", [
    ("vanilla", "mlp"), ("single_noise", "mlp"), ("msnat_no_fi", "mlp"), ("msnat_no_fl", "lenet"),
    ("msnat", "lenet"), ("hwa_aihwkit", "lenet"),
])
def test_every_recipe_runs_and_records_itself(name, source, lenet_pkg, mlp_pkg, digits, tmp_path):
    src = lenet_pkg if source == "lenet" else mlp_pkg
    overrides = FAST + (TWO if name.startswith("msnat") else [])
    pkg = ad.recover(src, name, digits, output=tmp_path / "out", overrides=overrides)
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    rec = R.load(name, overrides)
    assert cfg["recipe"]["name"] == name and cfg["recipe"]["sha256"] == rec.sha256()
    assert cfg["recipe"]["resolved"] == rec.to_dict()
    assert cfg["data"]["fingerprint"] == digits.fingerprint
    assert cfg["training"]["rounds"] == 1 and 0.0 <= cfg["training"]["best"]["val_acc"] <= 1.0
    assert cfg["training"]["mode"] == ("aihwkit" if name == "hwa_aihwkit" else "loop")
    assert cfg["provenance"]["history"][-1]["stage"] == "recover"
    assert cfg["analog"] == json.loads((src / "config.json").read_text())["analog"]  # noise level unchanged
    log = (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()
    assert len(log) == 1 and json.loads(log[0])["round"] == 1
    assert not (tmp_path / "out.partial").exists()  # the checkpoint goes once the package is written
    loaded = package.load(tmp_path / "out")  # sha256-verified, rebuilt bit for bit
    assert loaded.weights_sha256 == pkg.weights_sha256
    before = _weights(src)
    after = _weights(tmp_path / "out")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained


def test_msnat_learns_and_keeps_accuracy_under_noise(lenet_pkg, digits, tmp_path):
    ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "m", overrides=["training.rounds=4", "training.cpu_threads=1"] + TWO)
    m = package.load(tmp_path / "m").model
    from analogai_deploy.recovery.batches import Batches
    from analogai_deploy.recovery.validation import evaluate

    acc = evaluate(m, Batches(digits.test, 512, torch.device("cpu")), 0.3, draws=3)["acc"]
    assert acc > 0.6  # an untrained model sits at 0.1


def test_fusion_is_the_mean_of_the_clients_full_state(lenet_pkg):
    clients = []
    for seed in range(3):
        torch.manual_seed(seed)
        m = package.load(lenet_pkg).model.train()
        for p in m.parameters():
            p.data.normal_()
        m(torch.randn(16, 1, 8, 8))  # moves BatchNorm running stats and num_batches_tracked
        clients.append(m)
    fused = package.load(lenet_pkg).model
    msnat.fuse(clients, msnat.fusion_weights(3), fused)
    states = [c.state_dict() for c in clients]
    for key, value in fused.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(s[key] for s in states) / 3)
        else:
            assert torch.equal(value, states[0][key])
    assert any("running_mean" in k for k in fused.state_dict())
    # accuracy-weighted a_k and momentum broadcast w_k <- 0.1 w_k + 0.9 w
    a = msnat.fusion_weights(3, [0.5, 0.25, 0.25])
    assert a == [0.5, 0.25, 0.25]
    msnat.fuse(clients, a, fused)
    old = clients[1].state_dict()["9.weight"].clone()
    msnat.broadcast(fused, clients, keep=0.1)
    torch.testing.assert_close(clients[1].state_dict()["9.weight"], 0.1 * old + 0.9 * fused.state_dict()["9.weight"])
    msnat.broadcast(fused, clients, keep=0.0)
    assert all(torch.equal(c.state_dict()["0.weight"], fused.state_dict()["0.weight"]) for c in clients)


def test_fusion_and_broadcast_update_a_tied_weight_once(tmp_path):
    # GPT-2's LM head is its embedding table: one tensor under two state_dict keys. Updated in place through
    # both, fusion scaled it by sum(a_k^2) + 2 (sum(a_k) - a_0) instead of averaging it (SmolLM2's 5 clients:
    # a 1.64x embedding table after one round, next-token agreement of its own digital model 0.51)
    from hf_models import gpt2_lm

    pkg = ad.convert(f"hf:{gpt2_lm(tmp_path / 'hf')}", output=tmp_path / "lm", task="causal-lm")
    clients = []
    for seed in range(3):
        torch.manual_seed(seed)
        m = package.load(pkg.path).model
        for p in m.parameters():
            p.data.normal_()
        clients.append(m)
    fused = package.load(pkg.path).model
    assert fused.get_submodule("lm_head").weight is fused.get_submodule("transformer.wte").weight
    msnat.fuse(clients, msnat.fusion_weights(3), fused)
    mean = sum(c.get_submodule("transformer.wte").weight for c in clients) / 3
    torch.testing.assert_close(fused.get_submodule("lm_head").weight, mean)
    old = clients[1].get_submodule("transformer.wte").weight.detach().clone()
    msnat.broadcast(fused, clients, keep=0.1)
    torch.testing.assert_close(clients[1].get_submodule("lm_head").weight, 0.1 * old + 0.9 * mean)


def test_feedback_loss_equals_a_hand_computation(lenet_pkg):
    model = package.load(lenet_pkg).model.train()
    cfg = R.load("msnat").recovery.feedback
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    noise = msnat.NoiseControl(model)
    noise.set(0.2)
    torch.manual_seed(7)
    z, z0 = msnat.feedback_logits(model, x, noise, cfg)
    loss = Objective().loss(z, y, x, cfg.temperature)  # the loss the trainer takes with the feedback loops on
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    assert noise.sigma == 0.2 and all(l.analog.sigma == 0.2 for l in noise.layers)

    model.zero_grad()
    torch.manual_seed(7)  # same noise draws, same order: sigma, sigma+0.05, sigma+0.10, sigma+0.15
    outs = []
    for s in (0.2, 0.25, 0.30, 0.35):
        ad.set_noise(model, s)
        outs.append(model(x))
    hand_z = outs[0] - 1e-3 * (1.0 * outs[1] + 0.1 * outs[2] + 0.01 * outs[3])
    hand = F.cross_entropy(hand_z / 4.0, y)
    hand.backward()
    torch.testing.assert_close(loss, hand)
    torch.testing.assert_close(z0, outs[0])
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)  # backward went through all four passes
    assert not torch.allclose(outs[0], outs[1])  # the passes saw different noise


def test_interrupted_then_resumed_equals_uninterrupted(lenet_pkg, digits, tmp_path):
    over = ["training.rounds=3", "training.cpu_threads=1", "recovery.fusion.momentum_broadcast=true"] + TWO
    ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "a", overrides=over)

    def stop_after_two(entry):
        if entry["round"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="`resume=True`"):
        ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "b", overrides=over, on_round=stop_after_two)
    state = json.loads((tmp_path / "b.partial" / "state.json").read_text())
    assert [f.name for f in (tmp_path / "b.partial").glob("state-*.safetensors")] == [state["tensors"]]
    assert state["round"] == 2 and not (tmp_path / "b").exists()
    with pytest.raises(UsageError, match="recipe"):  # a checkpoint only resumes the run it belongs to
        ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "b", overrides=over + ["training.lr=0.01"], resume=True)
    pkg = ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "b", overrides=over, resume=True)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise, buffers included
    assert pkg.config["training"]["best"] == json.loads((tmp_path / "a" / "config.json").read_text())["training"]["best"]
    assert len((tmp_path / "b" / "train_log.jsonl").read_text().splitlines()) == 3
    assert pkg.config["training"]["resumed_from_round"] == 2


def test_plain_broadcast_checkpoint_stores_equal_clients_once_and_resumes_bitwise(lenet_pkg, digits, tmp_path):
    """After a plain broadcast every client equals the fused model: the checkpoint stores it once (and the
    best state too when the best round is the last), names them in same_as_fused, and resume stays bitwise."""
    from safetensors import safe_open

    over = ["training.rounds=3", "training.cpu_threads=1"] + TWO
    ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "a", overrides=over)

    def stop_after_two(entry):
        if entry["round"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "b", overrides=over, on_round=stop_after_two)
    state = json.loads((tmp_path / "b.partial" / "state.json").read_text())
    assert {"client0", "client1"} <= set(state["same_as_fused"])
    with safe_open(str(tmp_path / "b.partial" / state["tensors"]), "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith("client") for k in keys) and any(k.startswith("fused/") for k in keys)
    assert any(k.startswith("best/") for k in keys) == ("best" not in state["same_as_fused"])
    pkg = ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "b", overrides=over, resume=True)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert pkg.config["training"]["best"] == json.loads((tmp_path / "a" / "config.json").read_text())["training"]["best"]


def test_same_seed_same_weights_other_seed_other_weights(mlp_pkg, digits, tmp_path):
    over = FAST + ["recovery.noise_0.act_inject.sigma=0.2"]
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        ad.recover(mlp_pkg, "single_noise", digits, output=tmp_path / name, overrides=over + [f"training.seed={seed}"])
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(mlp_pkg, digits, tmp_path):
    def poison(entry):  # after round 1 is checkpointed, break the weights as a bad step would
        if entry["round"] == 1:
            with torch.no_grad():
                for p in poisoned.parameters():
                    p.fill_(float("nan"))

    src = package.load(mlp_pkg)
    poisoned = src.model
    with pytest.raises(OperationFailed, match="diverged") as err:
        ad.recover(src, "vanilla", digits, output=tmp_path / "o", on_round=poison,
                   overrides=["training.rounds=3", "training.cpu_threads=1"])
    assert "training.lr" in err.value.hint and "round 1" in err.value.hint
    state = json.loads((tmp_path / "o.partial" / "state.json").read_text())
    assert state["round"] == 1


def test_bad_inputs_fail_before_training(lenet_pkg, tmp_path):
    for recipe, data, over, match in (
        ("nosuch", "digits", [], "recipe"),
        ("msnat", "cifar10", [], "local path"),
        ("msnat", "digits", ["training.lr=-1"], "lr"),
        ("msnat", "digits", ["recovery.feedback.gammas=[1, 2]"], "same length"),
    ):
        with pytest.raises(UsageError, match=match):
            ad.recover(lenet_pkg, recipe, data, output=tmp_path / "x", overrides=over)
    wrong = tmp_path / "lenet3"
    ad.convert("lenet", output=wrong, num_classes=3)
    with pytest.raises(UsageError, match="`num_classes=10`"):
        ad.recover(wrong, "vanilla", "digits", output=tmp_path / "x")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_robust_methods_compose_with_msnat(mlp_pkg, digits, tmp_path):
    over = FAST + TWO + ["recovery.optimizer.sam=true", "recovery.adversarial.FGSM.use=true", "recovery.qat=true",
                         "recovery.quant.w_bits=6", "training.batch_size=128"]
    ad.recover(mlp_pkg, "msnat", digits, output=tmp_path / "q", overrides=over)
    cfg = json.loads((tmp_path / "q" / "config.json").read_text())
    q = package.section(cfg, "quantization")
    assert q.w_bits == 6 and q.layers and all(v["act_max"] > 0 for v in q.layers.values())
    loaded = package.load(tmp_path / "q")
    from analogai_deploy.analog.convert import analog_layers

    assert all(layer.analog.weight_quant is not None for _, layer in analog_layers(loaded.model))


def test_noise_reaches_every_analog_layer_of_resnet18(tmp_path):
    from torch import nn

    pkg = ad.convert("resnet18", output=tmp_path / "r18", num_classes=10, input_shape=[3, 32, 32])
    model = pkg.model.train()
    noise = msnat.NoiseControl(model)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(noise.layers) == len(convs) == 21  # 20 convolutions (residual blocks and shortcuts) + fc
    noise.set(0.3)
    seen = {}

    def check(layer, inputs, output):
        clean = layer._conv_forward(inputs[0], layer.weight, layer.bias) if isinstance(layer, nn.Conv2d) else \
            F.linear(inputs[0], layer.weight, layer.bias)
        seen[layer] = not torch.allclose(clean, output)

    hooks = [layer.register_forward_hook(check) for layer in noise.layers]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert len(seen) == 21 and all(seen.values())


def test_recover_cli(lenet_pkg, cli, tmp_path):
    src = tmp_path / "lenet"
    shutil.copytree(lenet_pkg, src)
    code, out, err = cli("recover", src, "--recipe", "vanilla", "-o", tmp_path / "v", "training.rounds=1",
                         "training.cpu_threads=1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["recipe"] == "vanilla" and data["training"]["rounds"] == 1
    curve = tmp_path / "v" / "training_curve.png"  # drawn from train_log.jsonl, shown on the card
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and data["training"]["curve"] == "training_curve.png"
    assert "](training_curve.png)" in (tmp_path / "v" / "README.md").read_text()
    assert package.load(data["package"]).weights_sha256 == data["weights_sha256"]
    code, _, err = cli("recover", src, "training.batchsize=3")
    assert code == 2 and "batch_size" in err
    code, _, err = cli("recover", src, "--data", "mnist")
    assert code == 2 and "mnist:" in err


def test_batched_mode_trains_the_same_clients_as_the_loop(lenet_pkg, digits, tmp_path):
    """Noise-free and FL-free, the stacked vmap clients must follow the loop's clients step for step."""
    over = ["training.rounds=2", "training.cpu_threads=1", "training.use_FL=false", "training.optimizer=sgd",
            "training.lr=0.05", "recovery.noise_0.act_inject.sigma=0", "recovery.noise_1.act_inject.sigma=0",
            "recovery.fusion.momentum_broadcast=true"] + TWO
    for mode in ("loop", "batched"):
        pkg = ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / mode, overrides=over + [f"training.mode={mode}"])
        assert pkg.config["training"]["mode"] == mode
    a, b = _weights(tmp_path / "loop"), _weights(tmp_path / "batched")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    # with noise and FL it runs too, and resumes in its own mode only
    over = ["training.rounds=1", "training.cpu_threads=1", "training.mode=batched"] + TWO
    pkg = ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "noisy", overrides=over)
    assert pkg.config["training"]["best"]["val_acc"] > 0.1
    with pytest.raises(UsageError, match="SAM"):
        ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "x", overrides=over + ["recovery.optimizer.sam=true"])


def test_batched_mode_interrupted_then_resumed_equals_uninterrupted(lenet_pkg, digits, tmp_path):
    """The checkpoint holds every client of the stacked model (not only client 0) and its one optimizer."""
    over = ["training.rounds=2", "training.cpu_threads=1", "training.mode=batched"] + TWO
    ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "a", overrides=over)

    def stop_after_one(entry):
        if entry["round"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted, match="`resume=True`"):
        ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "b", overrides=over, on_round=stop_after_one)
    state = json.loads((tmp_path / "b.partial" / "state.json").read_text())
    assert state["round"] == 1 and state["clients"] == 2
    pkg = ad.recover(lenet_pkg, "msnat", digits, output=tmp_path / "b", overrides=over, resume=True)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise, buffers included
    assert pkg.config["training"]["best"] == json.loads((tmp_path / "a" / "config.json").read_text())["training"]["best"]
    assert pkg.config["training"]["mode"] == "batched" and pkg.config["training"]["resumed_from_round"] == 1


def test_interrupt_in_round_one_names_no_checkpoint_and_resume_counts_honestly(mlp_pkg, digits, cli, tmp_path):
    class StopAtFirstStep:  # a progress bar whose first update is Ctrl-C: inside round 1, before any checkpoint
        def __init__(self, **kw):
            pass

        def update(self, n=1):
            raise KeyboardInterrupt

        def close(self):
            pass

    over = ["training.rounds=2", "training.cpu_threads=1"]
    with pytest.raises(Interrupted) as info:
        ad.recover(mlp_pkg, "vanilla", digits, output=tmp_path / "o", overrides=over, progress=StopAtFirstStep)
    assert "nothing is checkpointed" in str(info.value) and "resume" not in info.value.hint
    assert not (tmp_path / "o.partial").exists()

    def stop_after_one(entry):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted, match=r"1 of 2 rounds are checkpointed in .*o\.partial"):
        ad.recover(mlp_pkg, "vanilla", digits, output=tmp_path / "o", overrides=over, on_round=stop_after_one)
    assert (tmp_path / "o.partial" / "state.json").exists()
    code, out, err = cli("recover", mlp_pkg, "--recipe", "vanilla", "-o", tmp_path / "o", "--resume", *over)
    assert code == 0, err
    assert "vanilla: 2 rounds, 1 of them in this run" in out and "round 1 from the checkpoint" in out

    # resumed again when the package is finished: nothing to train, the package as it is; a changed run retrains
    before = (tmp_path / "o" / "model.safetensors").read_bytes()
    code, out, err = cli("recover", mlp_pkg, "--recipe", "vanilla", "-o", tmp_path / "o", "--resume", *over)
    assert code == 0 and "finished package (the same recipe, input weights and data): nothing to resume" in err
    assert (tmp_path / "o" / "model.safetensors").read_bytes() == before and "left as it was:" in out
    code, out, err = cli("recover", mlp_pkg, "--recipe", "vanilla", "-o", tmp_path / "o", "--resume",
                         "training.rounds=1", "training.cpu_threads=1")
    assert code == 2 and "already holds a package" in err  # another run's package is not replaced unasked


def test_recover_on_an_image_folder(tmp_path):
    """Datasets that are not in-memory tensors go through a DataLoader (the cifar10/mnist/imagefolder path)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for label, level in (("dark", 40), ("light", 215)):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(12):
            pixels = (level + torch.randint(-30, 30, (8, 8), generator=g)).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.numpy(), mode="L").save(tmp_path / "imgs" / label / f"{i}.png")
    ad.convert("mlp", output=tmp_path / "mlp2", num_classes=2)
    pkg = ad.recover(tmp_path / "mlp2", "single_noise", f"imagefolder:{tmp_path / 'imgs'}", output=tmp_path / "out",
                     overrides=["training.rounds=3", "training.batch_size=8"])
    assert pkg.config["data"]["spec"].startswith("imagefolder:")
    assert pkg.config["training"]["best"]["val_acc"] == 1.0  # dark vs light is easy


def test_a_corrupt_image_in_an_image_folder_is_named(tmp_path, cli):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (8, 8), 40 if label == "a" else 200).save(tmp_path / "imgs" / label / f"{i}.png")
    bad = tmp_path / "imgs" / "b" / "3.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 8)  # was: UnidentifiedImageError, "this is a bug"
    ad.convert("mlp", output=tmp_path / "mlp2", num_classes=2)
    spec = f"imagefolder:{tmp_path / 'imgs'}"
    for args in (("recover", tmp_path / "mlp2", "--recipe", "vanilla", "--data", spec, "-o", tmp_path / "out",
                  "training.rounds=1", "training.batch_size=4"),  # DataLoader workers
                 ("certify", tmp_path / "mlp2", "--data", spec, "--repeats", "2", "--times", "1d")):
        code, _, err = cli(*args)
        assert code == 2, err
        assert f"error: cannot read the image {bad}: no image format recognised" in err and "bug" not in err
        assert err.count("error:") == 1 and "Traceback" not in err and "DataLoader" not in err
    assert not (tmp_path / "out").exists()


def test_a_dataset_too_small_to_split_is_a_usage_error(tmp_path, cli):
    from PIL import Image

    for label in ("a", "b"):  # one image per class: 2 train / 0 val / 0 test
        (tmp_path / "imgs" / label).mkdir(parents=True)
        Image.new("L", (8, 8), 40 if label == "a" else 200).save(tmp_path / "imgs" / label / "0.png")
    ad.convert("mlp", output=tmp_path / "mlp2", num_classes=2)
    spec = f"imagefolder:{tmp_path / 'imgs'}"
    for args in (("recover", tmp_path / "mlp2", "--recipe", "vanilla", "--data", spec, "-o", tmp_path / "out"),
                 ("certify", tmp_path / "mlp2", "--data", spec, "--repeats", "2", "--times", "1d")):
        code, _, err = cli(*args)
        assert code == 2, err
        assert "has 2 samples, split 2 train / 0 val / 0 test: the val and test splits are empty" in err
        assert "at least 3 samples" in err and "bug" not in err
    assert not (tmp_path / "out").exists()


def test_hwa_baseline_resumes(lenet_pkg, digits, tmp_path):
    over = ["training.rounds=2"]

    def stop(entry):
        raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        ad.recover(lenet_pkg, "hwa_aihwkit", digits, output=tmp_path / "h", overrides=over, on_round=stop)
    pkg = ad.recover(lenet_pkg, "hwa_aihwkit", digits, output=tmp_path / "h", overrides=over, resume=True)
    t = pkg.config["training"]
    assert (t["rounds"], t["resumed_from_round"], t["mode"]) == (2, 1, "aihwkit")
    assert [json.loads(line)["round"] for line in (tmp_path / "h" / "train_log.jsonl").read_text().splitlines()] == [1, 2]


def test_overrides_by_dotted_key_and_early_stopping(mlp_pkg, digits, tmp_path):
    # a learning rate too small to change any prediction: validation never improves after round 1
    pkg = ad.recover(mlp_pkg, "vanilla", digits, output=tmp_path / "o",
                     overrides={"training.rounds": 6, "training.patience": 2, "training.lr": 1e-9,
                                "training.schedule": "constant"})
    t = pkg.config["training"]
    assert t["stopped_early"] and t["rounds"] == 3 and t["best"]["round"] == 1
    assert pkg.config["recipe"]["resolved"]["training"]["patience"] == 2


def test_recovered_package_drops_what_described_the_old_weights(mlp_pkg, digits, tmp_path):
    src = package.load(mlp_pkg)
    config = dict(src.config, export={"onnx": {"file": "model.onnx"}}, certificate={"passed": True})
    cert = json.dumps({"weights_sha256": src.weights_sha256}).encode()
    package.write(tmp_path / "staged", config, files={"certificate.json": cert, "model.onnx": b"onnx",
                                                      "certificate.png": b"png", "tokenizer.json": b"{}"},
                  base=mlp_pkg)
    pkg = ad.recover(tmp_path / "staged", "vanilla", digits, output=tmp_path / "out", overrides=FAST)
    names = {f.name for f in (tmp_path / "out").iterdir()}
    assert names == {"config.json", "model.safetensors", "README.md", "train_log.jsonl", "training_curve.png",
                     "tokenizer.json"}
    assert "certificate" not in pkg.config and "export" not in pkg.config
    assert pkg.config["recipe"]["type"] == "Recipe" and pkg.config["recipe"]["version"] == 1
    package.load(tmp_path / "out")


def test_ctrl_c_leaves_a_resumable_checkpoint(mlp_pkg, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "o"
    cmd = [sys.executable, "-c", "from analogai_deploy.cli.app import run; run()", "recover", str(mlp_pkg),
           "--recipe", "vanilla", "-o", str(out), "training.rounds=100000", "-q"]
    # Ctrl-C's own disposition: a suite started in the background of a non-interactive shell (`make test &`)
    # passes SIGINT on ignored, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out.parent / "o.partial" / "state.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "slow"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "rerun the same command with --resume" in err
    state = json.loads((out.parent / "o.partial" / "state.json").read_text())
    assert state["round"] >= 1 and (out.parent / "o.partial" / state["tensors"]).exists()
    assert not out.exists()
