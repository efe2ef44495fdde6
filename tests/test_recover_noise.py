"""The issue's acceptance check (slow): the shipped msnat recipe beats vanilla under weight noise sigma = 0.3."""
from __future__ import annotations

import pytest
import torch

import analogai_deploy as ad
from analogai_deploy import data, package
from analogai_deploy.recovery.batches import Batches
from analogai_deploy.recovery.validation import evaluate


@pytest.mark.slow
def test_msnat_keeps_more_accuracy_under_noise_than_vanilla(lenet_pkg, tmp_path):
    ds = data.load("digits", input_shape=[1, 8, 8])
    test = Batches(ds.test, 512, torch.device("cpu"))
    acc = {}
    for name in ("vanilla", "msnat"):  # shipped defaults: the same 20 rounds (epochs) each
        ad.recover(lenet_pkg, name, ds, output=tmp_path / name)
        model = package.load(tmp_path / name).model
        acc[name] = evaluate(model, test, 0.3, draws=10, seed=999)["acc"]  # test split, 10 noise draws
    assert acc["msnat"] > acc["vanilla"] + 0.05, acc
