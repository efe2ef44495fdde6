"""The seed's own example: ResNet-18 (CIFAR form) + MSNAT (K=5, sigma 0.1 ... 0.3, FI + FL, batch 256) on cifar10:PATH."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import analogai_deploy as ad
from analogai_deploy.errors import UsageError

from data_helpers import cifar10_from_digits

SEED_OVERRIDES = ["training.batch_size=256", "training.use_FI=True", "training.use_FL=True"]


def test_resnet18_cifar_has_the_cifar_stem(tmp_path):
    pkg = ad.convert("resnet18_cifar", output=tmp_path / "r", num_classes=10)
    model = pkg.model
    assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(model.maxpool, nn.Identity)
    assert pkg.config["input"]["shape"] == [3, 32, 32]
    seen = {}
    model.layer1.register_forward_hook(lambda m, i, o: seen.update(layer1=o.shape))
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    assert seen["layer1"][-2:] == (32, 32)  # no downsampling before layer1
    assert "conv1" in pkg.placement.names and len(pkg.placement.analog) == 21


def test_the_seed_recipe_resolves_to_the_seed_settings(cli):
    code, out, err = cli("recipes", "show", "msnat", *SEED_OVERRIDES, "--json")
    assert code == 0, err
    resolved = json.loads(out)["resolved"]
    t = resolved["training"]
    assert (t["batch_size"], t["use_FI"], t["use_FL"]) == (256, True, True)
    sigmas = [resolved["recovery"][f"noise_{k}"]["act_inject"]["sigma"] for k in range(5)]
    assert sigmas == [0.1, 0.15, 0.2, 0.25, 0.3]


def test_cifar10_binary_folder_loads_without_pickle(tmp_path):
    from analogai_deploy.data import load

    root = cifar10_from_digits(tmp_path / "cifar", per_batch=10, test=20)
    d = load(f"cifar10:{root}")
    assert (len(d.train), len(d.val), len(d.test), d.num_classes, d.input_shape) == (45, 5, 20, 10, [3, 32, 32])
    x, y = d.test[0]
    assert x.shape == (3, 32, 32) and 0 <= int(y) <= 9
    assert load(f"cifar10:{root}", input_shape=[1, 16, 16]).test[0][0].shape == (1, 16, 16)
    (root / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    with pytest.raises(UsageError, match="data_batch_3.bin missing"):
        load(f"cifar10:{root}")


@pytest.mark.slow
def test_the_seed_example_as_one_command_line(tmp_path, cli):
    """README: convert resnet18_cifar && recover --recipe msnat --data cifar10:PATH with the seed's settings."""
    root = cifar10_from_digits(tmp_path / "cifar", per_batch=4, test=16)
    code, _, err = cli("convert", "resnet18_cifar", "--num-classes", "10", "-o", tmp_path / "r18")
    assert code == 0, err
    code, _, err = cli("recover", tmp_path / "r18", "--recipe", "msnat", "--data", f"cifar10:{root}",
                       *SEED_OVERRIDES, "training.rounds=1", "-o", tmp_path / "r18-msnat")
    assert code == 0, err
    config = json.loads((tmp_path / "r18-msnat" / "config.json").read_text())
    assert config["recipe"]["resolved"]["training"]["batch_size"] == 256
    assert config["placement"] == json.loads((tmp_path / "r18" / "config.json").read_text())["placement"]
