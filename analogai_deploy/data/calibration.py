"""The inputs a mapping is calibrated on (its per-channel input scales and static input ranges): never the
evaluation samples by default - the train split of the dataset for images, CALIBRATION_SENTENCES for text."""
from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..tasks import Record
from . import load
from .eval_set import fingerprint, load_eval_set, materialise
from .text import tokenize, tokenizer_for

#: calibration text for packages without their own: not the evaluation sentences
CALIBRATION_SENTENCES = [
    "Weather forecasts predict rain for most of the weekend.",
    "The library lends books, films and music for free.",
    "Engineers tested the bridge before it opened to traffic.",
    "My grandmother taught me how to knit a warm scarf.",
    "The company reported higher profits in the last quarter.",
    "Birds migrate south when the days grow shorter.",
    "He forgot his umbrella on the bus this morning.",
    "The new stadium can seat sixty thousand fans.",
    "A gentle breeze carried the smell of the sea inland.",
    "The doctor recommended more rest and less coffee.",
    "Students gathered in the hall for the final exam.",
    "The old clock in the tower stopped at midnight.",
    "Farmers harvested the wheat before the heavy rains.",
    "The app lets you track your spending each month.",
    "Two climbers reached the summit just after sunrise.",
    "The city council voted to expand the bus network.",
]


def calibration_batches(package_path, config: dict[str, Any], mapping,
                        data_spec: str | None) -> tuple[list, dict[str, Any]]:
    """The calibration inputs of a package (its config.json `config`) under `mapping` (a MappingConfig: its
    calibration spec and sample count), and where they came from (`data_spec`: the certify dataset of images)."""
    m = mapping.complete()
    n = m.calibration_samples
    record = Record.of(config)
    if record.text:
        if m.calibration is not None:
            ev = load_eval_set(package_path, config, m.calibration, limit=n)
            return ev.batches, {"spec": ev.spec, "n": ev.n, "fingerprint": ev.fingerprint}
        try:
            tok = tokenizer_for(package_path, config)
        except UsageError as exc:
            raise UsageError(f"calibrating the mapping needs the package's tokenizer: {exc.message}",
                             "pass `calibration=tokens`, or `input_scaling=none` `input_range=dynamic`") from None
        sentences = CALIBRATION_SENTENCES[:n]
        names = record.input_names
        batch = dict(zip(names, tokenize(tok, sentences, record.seq_len, names)))
        return [batch], {"spec": "calibration sentences (built in, not the evaluation ones)", "n": len(sentences),
                         "fingerprint": fingerprint(*batch.values())}
    spec = m.calibration or data_spec or "digits"
    d = load(spec, input_shape=config["input"].get("shape"))
    x, _ = materialise(d.train, n)
    return [x], {"spec": spec, "split": "train", "n": len(x), "fingerprint": fingerprint(x)}
