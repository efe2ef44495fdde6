"""data/: one split for images and text, every split non-empty, the same indices as before where they were."""
import torch

from analogai_deploy import data
from analogai_deploy.data import base


def _order(n):
    return torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()


def _old_image_split(n):
    order = _order(n)
    a = int(0.7 * n)
    b = a + int(0.15 * n)
    return order[:a], order[a:b], order[b:]


def _old_text_split(n):
    order = _order(n)
    a = max(1, int(0.7 * n))
    b = a + max(1, int(0.15 * n))
    return order[:a], order[a:b], order[b:]


def test_every_split_is_non_empty_and_unchanged_where_it_was_non_empty():
    for n in range(3, 400):
        parts = base.split(n)
        assert all(parts) and sorted(sum(parts, [])) == list(range(n)), n
        for old in (_old_image_split(n), _old_text_split(n)):
            if all(old):
                assert parts == old, n
    assert base.split(2) == (_order(2), [], [])  # too few: the loaders refuse it, naming the counts
    # the shipped digits keep their split (certificates are measured on it)
    assert base.split(1797) == _old_image_split(1797)


def test_an_image_folder_of_three_images_splits_one_each(tmp_path):
    from PIL import Image

    for i, label in enumerate(("a", "b", "a")):
        (tmp_path / label).mkdir(exist_ok=True)
        Image.new("L", (8, 8), 40 * (i + 1)).save(tmp_path / label / f"{i}.png")
    d = data.load(f"imagefolder:{tmp_path}", input_shape=[1, 8, 8])
    assert (len(d.train), len(d.val), len(d.test)) == (1, 1, 1)
    assert d.labelled and d.provenance == {} and d.example() is None


def test_images_and_text_implement_one_interface():
    from analogai_deploy.data.text import TextData

    fields = set(base.SplitData.__annotations__) | {"labelled", "example"}
    for cls in (data.Data, TextData):
        assert all(hasattr(cls, f) or f in cls.__dataclass_fields__ for f in fields), cls
    assert TextData.text and not data.Data.text


def test_calibration_tokenises_as_evaluation_does(tmp_path):
    """Calibration text goes through the one tokenisation of data.text (the package's tokenizer checked against
    config.json, padded on the right), as training and certify read text."""
    import analogai_deploy as ad
    from analogai_deploy.analog.mapping import MappingConfig
    from analogai_deploy.data.calibration import CALIBRATION_SENTENCES, calibration_batches
    from analogai_deploy.data.text import tokenize, tokenizer_for
    from hf_models import gpt2_lm

    pkg = ad.convert(f"hf:{gpt2_lm(tmp_path / 'hf')}", output=tmp_path / "lm", task="causal-lm")
    (batch,), info = calibration_batches(pkg.path, pkg.config, MappingConfig(input_scaling="channel"), None)
    names = pkg.config["input"]["names"]
    n = MappingConfig().complete().calibration_samples
    want = tokenize(tokenizer_for(pkg.path, pkg.config), CALIBRATION_SENTENCES[:n], pkg.config["input"]["seq_len"], names)
    assert list(batch) == names and all(torch.equal(batch[k], v) for k, v in zip(names, want))
    assert info["n"] == len(want[0]) > 0


def test_data_errors_name_the_parameter_and_the_cli_names_the_flag():
    import pytest

    from analogai_deploy.cli.error_messages import flags
    from analogai_deploy.errors import UsageError
    from analogai_deploy.sources import resolve

    with pytest.raises(UsageError) as err:
        data.load("corpus")
    assert err.value.message == "`data=corpus` is text; this package takes images"
    assert flags(err.value.message) == "--data corpus is text; this package takes images"
    with pytest.raises(UsageError) as err:
        resolve("lenet", num_classes=0)
    assert "--" not in err.value.message + err.value.hint
    assert flags(err.value.message).startswith("--num-classes 0: a classifier needs at least 1 class")
