"""The afm recipe (IBM's Analog Foundation Models) and learned static input ranges, a mapping option that
training records in config.json and both certify engines use."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import analogai_deploy as ad
from analogai_deploy import package
from analogai_deploy.analog.convert import analog_layers
from analogai_deploy.analog.mapping import MappingConfig
from analogai_deploy.errors import UsageError
from analogai_deploy.hardware.noise import RANGE, input_range_clip
from analogai_deploy.recovery import hardware_noise, recipe as R
from analogai_deploy.recovery.recipe_noise import InputRangeConfig


def test_afm_recipe_holds_the_anchors_constants_and_round_trips():
    r = R.load("afm")
    t, n, io = r.training, r.noise, r.io
    assert (t.optimizer, t.adam_betas, t.adam_eps, t.weight_decay, t.warmup, t.schedule) == (
        "adamw", [0.9, 0.98], 1e-6, 0.01, 0.016, "linear")
    assert (t.use_FI, t.use_FL, r.recovery.sigmas, n.slicing_factor, n.scale, n.model) == (
        False, False, [0.03], 1.0, "column", "gaussian")
    assert (n.clip, n.clip_value, n.clip_when) == ("channel_std", 2.5, "step")
    assert (io.dac_bits, io.adc_bits, io.out_bound, io.out_noise) == (8, 8, 14.0, 0.0)
    assert io.input_range.to_dict() == {"mode": "learned", "init_value": 3.0, "init_from_data": 500,
                                        "init_std_alpha": 18.0, "decay": 0.01, "input_min_percentage": 0.95}
    assert r.recovery.distill.temperature == 1.0
    again = R.Recipe.from_dict(r.to_dict())
    assert again == r and again.sha256() == r.sha256()
    assert "IBM/analog-foundation-models" in r.description
    text = R.load("afm", text=True)
    assert text.variant == "text" and text.training.lr == 2e-5 and text.io == io
    # MSNAT under the same hardware model: the seed's FI + FL on afm's tiles
    m = R.load("msnat_afm")
    assert m.training.use_FI and m.training.use_FL and len(m.recovery.sigmas) == 5
    assert (m.noise, m.io) == (r.noise, r.io) and 0.03 in m.recovery.sigmas
    # typed: unknown keys and bad values are refused; recipes without the new fields keep their hash
    with pytest.raises(UsageError, match="valid keys"):
        R.load("afm", ["io.input_range.warmup=3"])
    with pytest.raises(UsageError, match="learned"):
        R.load("afm", ["io.input_range.mode=static"])
    with pytest.raises(UsageError, match="clip_when"):
        R.load("afm", ["noise.clip=none"])
    with pytest.raises(UsageError, match="adam_betas"):
        R.load("afm", ["training.adam_betas=[0.9]"])
    resolved = R.load("msnat_hw").to_dict()
    assert "input_range" not in resolved["io"] and "clip_when" not in resolved["noise"]
    assert not {"adam_betas", "adam_eps", "warmup"} & set(resolved["training"])


def _afm_model(lenet_pkg, tmp_path, overrides=()):
    shutil.copytree(lenet_pkg, tmp_path / "p")
    pkg = ad.load(tmp_path / "p")
    rec = R.load("afm", list(overrides))
    hardware_noise.apply(pkg.model, rec.noise, rec.io)
    return pkg, rec


def test_weight_noise_std_per_channel_is_003_of_its_abs_max(lenet_pkg, tmp_path):
    pkg, rec = _afm_model(lenet_pkg, tmp_path)
    layer = dict(analog_layers(pkg.model))["9"]  # a Linear layer
    assert layer.analog.c != 1.0  # the package's slicing factor, which slicing_factor 1 replaces
    with torch.no_grad():
        layer.weight[0] *= 20  # one channel far larger: per channel, it gets its own noise
    layer.analog.sigma = rec.recovery.sigmas[0]
    from analogai_deploy.analog.layers import noisy

    w = layer.weight.detach()
    std = torch.stack([noisy(w, layer.analog) - w for _ in range(400)]).std(0).mean(1)
    assert torch.allclose(std, 0.03 * w.abs().amax(1), rtol=0.05)


def test_weights_are_clipped_per_channel_at_25_std_after_every_step(lenet_pkg, tmp_path):
    from analogai_deploy.recovery import prepare_run
    from analogai_deploy.recovery.trainers import make_trainer

    pkg, rec, ds, objective = prepare_run(lenet_pkg, "afm", "digits", ["training.lr=1e-12", "training.warmup=0"])
    hardware_noise.apply(pkg.model, rec.noise, rec.io)
    layers = dict(analog_layers(pkg.model))
    with torch.no_grad():
        for layer in layers.values():
            layer.weight.view(layer.weight.shape[0], -1)[:, 0] = 100.0  # an outlier in every channel
    before = {n: layer.weight.detach().clone() for n, layer in layers.items()}
    trainer = make_trainer(pkg.model, rec, ds, tmp_path / "state", identity={}, objective=objective)
    x, y = next(iter(trainer.train_batches.iterate(torch.Generator().manual_seed(0))))
    trainer.train_step(0, x, y, trainer.make_loss_fn(trainer.noise[0]))
    for name, layer in layers.items():  # lr ~0: the step leaves the weights; the clip after it acts
        flat = before[name].view(before[name].shape[0], -1)
        bound = 2.5 * flat.std(1, keepdim=True)
        expect = torch.maximum(torch.minimum(flat, bound), -bound)
        assert torch.allclose(layer.weight.detach().view_as(flat), expect, atol=1e-5), name
        assert float(layer.weight.detach().view_as(flat)[:, 0].max()) < 90  # the outliers were cut


def test_learned_input_range_follows_aihwkit_lightnings_rule():
    cfg = InputRangeConfig(mode="learned", init_from_data=2, decay=0.5, input_min_percentage=0.9)
    r = torch.nn.Parameter(torch.tensor(3.0))
    seen = torch.zeros((), dtype=torch.long)
    a, b = torch.randn(64) * 0.1, torch.randn(64) * 0.2
    input_range_clip(a, r, seen, cfg, training=True)
    input_range_clip(b, r, seen, cfg, training=True)
    assert float(r.detach()) == pytest.approx(18.0 * (float(a.std()) + float(b.std())) / 2, rel=1e-5) and int(seen) == 2
    input_range_clip(torch.randn(64) * 50, r, seen, cfg, training=True)  # init over: r stays
    assert int(seen) == 2
    # after the init: inputs beyond r clip with no gradient; r gets the clipped ones' gradient x r, plus decay
    with torch.no_grad():
        r.fill_(1.0)
    x = torch.tensor([0.5, -0.25, 2.0, -3.0], requires_grad=True)
    out = input_range_clip(x, r, seen, cfg, training=True)
    assert out.tolist() == [0.5, -0.25, 1.0, -1.0]
    out.backward(torch.tensor([1.0, 1.0, -2.0, 4.0]))
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert float(r.grad) == pytest.approx((-2.0 - 4.0) * 1.0)  # 50% inside < 90%: no decay
    r.grad = None
    x = torch.cat([torch.zeros(19), torch.tensor([5.0])]).requires_grad_()
    input_range_clip(x, r, seen, cfg, training=True).backward(torch.ones(20))
    assert float(r.grad) == pytest.approx(0.5 * 1.0)  # 95% inside > 90%: decay x r shrinks it



def test_learned_input_range_takes_several_passes_before_one_backward():
    # MSNAT's feedback loops (msnat_afm) run four forward passes, then one backward, while the first batches
    # still set r in place: the backward uses r as each pass saw it (it raised "modified by an inplace operation")
    cfg = InputRangeConfig(mode="learned", init_from_data=10, decay=0.0, input_min_percentage=0.9)
    r = torch.nn.Parameter(torch.tensor(3.0))
    seen = torch.zeros((), dtype=torch.long)
    x = torch.randn(64, requires_grad=True)
    loss = sum(input_range_clip(x * (k + 1), r, seen, cfg, training=True).square().sum() for k in range(4))
    loss.backward()
    assert int(seen) == 4 and x.grad is not None and r.grad is not None

@pytest.fixture(scope="module")
def afm_lenet(lenet_pkg, tmp_path_factory):
    out = tmp_path_factory.mktemp("afm") / "lenet"
    return ad.recover(lenet_pkg, "afm", "digits", output=out, overrides=["training.rounds=1"])


def test_afm_recover_records_learned_ranges_and_certify_uses_them_on_both_engines(afm_lenet):
    mapping = package.section(json.loads((afm_lenet.path / "config.json").read_text()), "mapping").to_dict()
    ranges = mapping["input_ranges"]
    assert mapping["input_range"] == "learned" and mapping["input_scaling"] == "none"
    assert mapping["clip"] == "none"  # the weights were clipped in training; certify programs them as they are
    assert sorted(ranges) == sorted(ad.load(afm_lenet.path).placement.names) and all(v > 0 for v in ranges.values())
    assert not any(RANGE in k for k in ad.load(afm_lenet.path).model.state_dict())  # not a weight
    tiny = MappingConfig(input_ranges={k: 1e-4 for k in ranges})  # every input clipped to nothing
    for engine in ("fast", "aihwkit"):
        kw = dict(repeats=1, times="1d", limit=64, write=False, engine=engine)
        cert = ad.certify(afm_lenet.path, **kw)
        assert cert["mapping"]["input_range"] == "learned" and cert["mapping"]["source"] == "package"
        assert cert["device"]["input_range"] if engine == "aihwkit" else True
        crushed = ad.certify(afm_lenet.path, mapping=tiny, **kw)
        acc = lambda c: c["results"][0]["mean"]  # noqa: E731
        assert acc(cert) > acc(crushed) + 0.15, engine  # certify reads the ranges config.json records
    with pytest.raises(UsageError, match="learned"):
        ad.certify(afm_lenet.path, mapping=MappingConfig(input_ranges={"nope": 1.0}), write=False, limit=8)


def test_learned_input_range_needs_recorded_ranges(lenet_pkg):
    with pytest.raises(UsageError, match="mapping.input_ranges"):
        ad.certify(lenet_pkg, mapping=MappingConfig(input_range="learned"), write=False, limit=8, repeats=1)


def test_afm_on_a_tiny_text_model_distils_at_t1_and_certifies_on_both_engines(tmp_path):
    from hf_models import llama_lm

    from analogai_deploy.data import text as text_data

    pkg = ad.convert(f"hf:{llama_lm(tmp_path / 'hf')}", output=tmp_path / "lm", task="causal-lm")
    (tmp_path / "few.txt").write_text("\n".join(text_data.corpus("train")[:24]) + "\n")
    out = ad.recover(pkg.path, "afm", f"text:{tmp_path / 'few.txt'}", output=tmp_path / "afm",
                     overrides=["training.rounds=1", "training.batch_size=8"])
    obj = out.config["training"]["objective"]
    assert (obj["loss"], obj["temperature"], out.config["recipe"]["resolved"]["variant"]) == ("kl", 1.0, "text")
    mapping = package.section(out.config, "mapping")
    ranges = mapping.input_ranges
    assert mapping.input_range == "learned" and len(ranges) == len(ad.load(out.path).placement.names)
    for engine in ("fast", "aihwkit"):
        cert = ad.certify(out.path, repeats=1, times="1d", limit=8, write=False, engine=engine)
        assert cert["mapping"]["input_range"] == "learned" and 0 <= cert["results"][0]["mean"] <= 1


def test_afm_refuses_to_clip_a_tied_lm_head_in_place_and_trains_it_with_the_forward_clip(tmp_path):
    # SmolLM2's LM head is its embedding table: clipping the head in place after every step rewrote the table
    # (clean agreement 0.014 after 24 passes, BENCHMARKS.md 6b)
    from hf_models import VOCAB, bpe_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from analogai_deploy.data import text as text_data

    torch.manual_seed(0)
    hf = tmp_path / "hf"
    LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                 bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)).save_pretrained(hf)
    bpe_tokenizer(hf)
    pkg = ad.convert(f"hf:{hf}", output=tmp_path / "lm", task="causal-lm")
    (tmp_path / "few.txt").write_text("\n".join(text_data.corpus("train")[:16]) + "\n")
    data, over = f"text:{tmp_path / 'few.txt'}", ["training.rounds=1", "training.batch_size=8"]
    with pytest.raises(UsageError, match="tied to .*embed_tokens.*noise.clip_when=forward"):
        ad.recover(pkg.path, "afm", data, output=tmp_path / "afm", overrides=over)
    assert not (tmp_path / "afm").exists() and not (tmp_path / "afm.partial").exists()

    out = ad.recover(pkg.path, "afm", data, output=tmp_path / "afm", overrides=[*over, "noise.clip_when=forward"])
    emb = out.model.get_submodule("model.embed_tokens").weight
    before = ad.load(pkg.path).model.get_submodule("model.embed_tokens").weight
    std = emb.std(dim=1, keepdim=True)
    assert (emb.abs() > 2.5 * std).any()  # the table keeps the rows' tails a clip at 2.5 std would cut
    assert package.section(out.config, "mapping").clip == "channel_std"  # ... and certify clips the head's copy
    assert torch.allclose(emb, before, atol=0.05)  # trained (distillation moves it), not clipped
