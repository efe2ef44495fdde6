"""convert validates before it writes: input shapes, the user's own errors, fixed-size models."""
from __future__ import annotations

import json

import pytest

NETS = '''from torch import nn
def digits(num_classes=10):
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, num_classes))
def mnist_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
def broken():
    x = undefined_name + 1
    return nn.Linear(2, 2)
class Bad(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
    def forward(self, x):
        raise ValueError("my forward is broken")
def bad():
    return Bad()
def odd():
    return nn.Sequential(nn.Flatten(), nn.Linear(50, 10))
class Recurrent(nn.Module):
    def __init__(self, cell, embed):
        super().__init__()
        self.emb = nn.Embedding(100, 8) if embed else None
        self.rnn = cell(8, 16, batch_first=True)
        self.head = nn.Linear(16, 4)
    def forward(self, x):
        h, _ = self.rnn(self.emb(x) if self.emb is not None else x)
        return self.head(h[:, -1])
def lstm_tokens():
    return Recurrent(nn.LSTM, embed=True)
def gru_sequence():
    return Recurrent(nn.GRU, embed=False)
'''


@pytest.fixture
def nets(tmp_path):
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def test_a_local_factory_without_input_shape_is_inferred(nets, tmp_path, cli):
    code, _, err = cli("convert", f"{nets}:digits", "-o", tmp_path / "p")
    assert code == 0, err
    assert json.loads((tmp_path / "p" / "config.json").read_text())["input"] == {
        "kind": "image", "shape": [1, 8, 8], "inferred": True}
    code, _, err = cli("recover", tmp_path / "p", "--recipe", "vanilla", "training.rounds=1", "-o", tmp_path / "r")
    assert code == 0, err  # the inferred shape is the one the data and every later stage use
    code, _, err = cli("convert", f"{nets}:mnist_mlp", "-o", tmp_path / "m")
    assert code == 0 and json.loads((tmp_path / "m" / "config.json").read_text())["input"]["shape"] == [1, 28, 28]
    code, _, err = cli("convert", f"{nets}:odd", "-o", tmp_path / "o")
    assert code == 2 and "cannot infer the input shape" in err and "--input-shape" in err
    assert not (tmp_path / "o").exists()


def test_recurrent_and_token_id_models_are_told_what_a_local_model_takes(nets, tmp_path, cli):
    # an LSTM / GRU was told "its first layer is Linear" (its head); token ids had no way to be expressed
    code, _, err = cli("convert", f"{nets}:gru_sequence", "-o", tmp_path / "p")
    assert code == 2 and "its first layer is GRU, which takes sequences" in err and "Linear" not in err
    for shape in ([], ["--input-shape", "1,8,8"]):
        code, _, err = cli("convert", f"{nets}:lstm_tokens", *shape, "-o", tmp_path / "p")
        assert code == 2 and "takes token ids (its first layer is Embedding)" in err and "hf:FOLDER" in err
    code, _, err = cli("convert", f"{nets}:lstm_tokens", "--input-shape", "8", "-o", tmp_path / "p")
    assert code == 2 and "--input-shape is an image's C,H,W (3 numbers >= 1), got 1 number" in err
    assert "token ids" in err and not (tmp_path / "p").exists()
    code, _, err = cli("convert", f"{nets}:odd", "-o", tmp_path / "p")
    assert code == 2 and "its first layer is Linear with 50 inputs, not 64 / 784 / 3072" in err


def test_errors_in_the_users_file_are_the_users(nets, tmp_path, cli):
    code, _, err = cli("convert", f"{nets}:broken", "-o", tmp_path / "p")
    assert code == 2 and f"{nets}:7: NameError" in err and "bug" not in err
    code, _, err = cli("convert", f"{nets}:bad", "--input-shape", "1,8,8", "-o", tmp_path / "p")
    assert code == 2 and f"{nets}:14: ValueError: my forward is broken" in err
    (tmp_path / "imp.py").write_text("import nosuchmodule_xyz\n")
    code, _, err = cli("convert", f"{tmp_path / 'imp.py'}:f", "-o", tmp_path / "p")
    assert code == 2 and "imp.py:1: ModuleNotFoundError" in err
    assert not (tmp_path / "p").exists()


def test_fixed_size_and_wrong_shapes_are_refused_before_writing(tmp_path, cli):
    code, _, err = cli("convert", "vit_b_16", "--input-shape", "3,32,32", "-o", tmp_path / "v")
    assert code == 2 and "3x224x224" in err and "3,224,224" in err
    code, _, err = cli("convert", "alexnet", "--input-shape", "3,8,8", "--num-classes", "10", "-o", tmp_path / "a")
    assert code == 2 and "does not run on 3x8x8 inputs" in err and "--input-shape" in err
    assert not (tmp_path / "v").exists() and not (tmp_path / "a").exists()


def test_selection_that_matches_nothing_is_a_usage_error(tmp_path, cli):
    code, _, err = cli("convert", "lenet", "--exclude-type", "Conv3x", "-o", tmp_path / "p")
    assert code == 2 and "Conv3x" in err and "Conv2d, Linear" in err
    code, _, err = cli("convert", "lenet", "--include", "nomatch*", "-o", tmp_path / "p")
    assert code == 2 and "matches no analog-capable module" in err and "0, 4, 9, 11" in err
    code, _, err = cli("convert", "lenet", "--exclude", "9", "--exclude-type", "Conv2d", "-o", tmp_path / "p")
    assert code == 0, err
