"""Text datasets by spec string, tokenised with the package's own tokenizer, split the same way every time.

    corpus             the English corpus shipped with the package (data/corpus/): train.txt (305 sentences)
                       is split into train/val, heldout.txt (100 sentences, never trained on) is the test split
    text:FILE          .txt: one example per line; .jsonl: one JSON object per line with a "text" field and an
                       optional "label"; .csv: a header row with a "text" column and an optional "label" column
    generated:N        causal LMs: the package's digital model (noise off) writes N samples from prompts taken
                       from the corpus (seeded sampling; the settings and a sha256 of the text are recorded)

Every example is tokenised to the package's sequence length (config.json input.seq_len), padded to it and
truncated at it; the tokenizer, the length and the padding are recorded in `TextData.provenance`.
Labels (ints, or strings mapped to ids through the model's own label names, labels.py) make a labelled set;
without them recovery distils.

A Hugging Face `datasets` folder (save_to_disk) is not read: that needs the `datasets` package and pyarrow,
far more than this needs; `Dataset.to_json("file.jsonl")` writes what `text:file.jsonl` reads.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import TensorDataset

from ..errors import PackageError, UsageError
from ..provenance import sha256_file
from ..tasks import Record
from .base import IMAGE_KINDS, holdout, split

CORPUS_DIR = Path(__file__).with_name("corpus")
CORPUS_VAL = 0.15  # share of corpus/train.txt held back for validation
MAX_EXAMPLES = 200_000
MAX_GENERATED = 10_000
#: generated:N sampling settings (recorded in provenance)
GENERATION = {"sampling": "top-k", "top_k": 50, "temperature": 1.0, "prompt_words": 3, "seed": 0}


class TextTensors(TensorDataset):
    """Token tensors (named) plus one target column: labels, a teacher's outputs, or the sample index."""

    def __init__(self, names: list[str], tensors: list[torch.Tensor], target: torch.Tensor):
        super().__init__(*tensors, target)
        self.names = list(names)

    def inputs(self, rows: tuple[torch.Tensor, ...]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return dict(zip(self.names, rows[:-1])), rows[-1]

    def batch(self, rows: tuple[torch.Tensor, ...]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """`inputs`, cut to the longest real sequence in these rows. Padding is on the right and masked, so
        the real positions compute the same values; a batch of short sentences no longer pays for seq_len
        (the shipped corpus averages 12 of 32 tokens). Targets are per sample (labels, pooled teacher outputs);
        an LM's per-token teacher logits are computed per batch from these same inputs."""
        x, target = self.inputs(rows)
        mask = x.get("attention_mask")
        if mask is None or mask.numel() == 0:
            return x, target
        length = max(int(mask.sum(1).max()), 1)
        if length == mask.shape[1]:
            return x, target
        return {k: v[:, :length] for k, v in x.items()}, target

    def with_target(self, target: torch.Tensor) -> TextTensors:
        return TextTensors(self.names, list(self.tensors[:-1]), target)


@dataclass
class TextData:
    """What `recover` trains on for a text package (implements data.base.SplitData, as data.Data does for images)."""

    text: ClassVar[bool] = True
    spec: str
    train: TextTensors
    val: TextTensors
    test: TextTensors
    num_classes: int | None  # None: no labels (distillation)
    input_shape: list[int]  # [seq_len]
    fingerprint: str
    provenance: dict[str, Any] = field(default_factory=dict)
    labels: list[str] | None = None  # label names in id order: the package's, or the file's strings (labels.py)

    @property
    def labelled(self) -> bool:
        return self.num_classes is not None

    def example(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """One training sample as model keyword arguments (the memory check runs it)."""
        x, _ = self.train.inputs(tuple(t[:1] for t in self.train.tensors))
        return {k: v.to(device) for k, v in x.items()}


def parse(spec: str) -> tuple[str, str | None]:
    kind, _, arg = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "corpus":
        if arg:
            raise UsageError(f"corpus takes no argument (got {arg!r})", "write `data=corpus`")
        return kind, None
    if kind == "generated":
        try:
            n = int(arg)
        except ValueError:
            raise UsageError(f"generated needs a sample count, got {arg!r}", "write e.g. `data=generated:200`") from None
        if not 1 <= n <= MAX_GENERATED:
            raise UsageError(f"generated:{n}: the count must be 1 ... {MAX_GENERATED}", "write e.g. `data=generated:200`")
        return kind, str(n)
    if kind == "text":
        if not arg:
            raise UsageError("text needs a file", "write `data=text:/path/to/file.txt` (.txt, .jsonl or .csv)")
        path = Path(arg)
        if path.is_dir():
            hint = ("a Hugging Face datasets folder is not read here: write it out with "
                    "Dataset.to_json('file.jsonl') and pass text:file.jsonl"
                    if (path / "dataset_info.json").exists() or (path / "state.json").exists()
                    else "pass a .txt, .jsonl or .csv file")
            raise UsageError(f"{arg} is a folder, not a text file", hint)
        if not path.is_file():
            raise UsageError(f"text file not found: {arg}", "pass the path of a .txt, .jsonl or .csv file")
        return kind, arg
    if kind in IMAGE_KINDS:
        raise UsageError(f"`data={spec}` holds images; this package takes text",
                         "use `data=corpus`, text:FILE (.txt/.jsonl/.csv) or generated:N")
    raise UsageError(f"unknown text data {spec!r}", "use corpus, text:FILE (.txt/.jsonl/.csv) or generated:N")


def read_file(path: str | Path) -> tuple[list[str], list[Any] | None]:
    """(texts, labels or None) from a .txt, .jsonl or .csv file; empty lines / empty texts are skipped."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text", "pass a UTF-8 .txt, .jsonl or .csv file") from None
    texts: list[str] = []
    labels: list[Any] = []
    if suffix == ".jsonl":
        for i, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}:{i} is not JSON ({exc.msg})", "write one JSON object per line") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise UsageError(f"{path}:{i} has no string \"text\" field", 'write lines like {"text": "...", "label": 0}')
            if row["text"].strip():
                texts.append(row["text"])
                labels.append(row.get("label"))
    elif suffix == ".csv":
        reader = csv.DictReader(raw.splitlines())
        if not reader.fieldnames or "text" not in reader.fieldnames:
            raise UsageError(f"{path} has no 'text' column (columns: {', '.join(reader.fieldnames or [])})",
                             "give the CSV a header row with a text column (and optionally label)")
        for row in reader:
            if (row.get("text") or "").strip():
                texts.append(row["text"])
                labels.append(row.get("label") if row.get("label") not in ("", None) else None)
    else:  # .txt and anything else: one example per line
        texts = [line.strip() for line in raw.splitlines() if line.strip()]
        labels = [None] * len(texts)
    if not texts:
        raise UsageError(f"{path} holds no text", "put one example per line (.txt) or rows with a text field")
    if len(texts) > MAX_EXAMPLES:
        raise UsageError(f"{path} holds {len(texts)} examples; at most {MAX_EXAMPLES} are read", "pass a smaller file")
    given = [lab for lab in labels if lab is not None]
    if not given:
        return texts, None
    if len(given) != len(labels):
        raise UsageError(f"{path}: {len(labels) - len(given)} of {len(labels)} examples have no label",
                         "label every example, or none (then recovery distils from the digital model)")
    return texts, labels


def corpus(part: str) -> list[str]:
    """The shipped English corpus: part 'train' or 'heldout'."""
    return [s for s in (CORPUS_DIR / f"{part}.txt").read_text(encoding="utf-8").splitlines() if s.strip()]


def tokenizer_for(package_path: str | Path, config: dict[str, Any]):
    """The tokenizer saved in the package at `package_path` (whose config.json is `config`), set up to pad on
    the right; one whose vocabulary differs from the one config.json records is refused."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(package_path))
    except Exception as exc:
        raise UsageError(f"the package holds no usable tokenizer ({type(exc).__name__})",
                         "convert the model from a folder that has its tokenizer files") from None
    want = (config.get("tokenizer") or {}).get("vocab_size")
    if isinstance(want, int) and len(tok) != want:  # e.g. tokenizer.json deleted: transformers invents a few tokens
        raise PackageError(f"the tokenizer in {package_path} has {len(tok)} tokens, but config.json records the "
                           f"model's tokenizer with {want} (a tokenizer file was deleted or replaced)",
                           "fetch the package again (its tokenizer files with it); a wrong tokenizer gives wrong "
                           "numbers without an error")
    if tok.pad_token is None:  # GPT-2 / Llama tokenizers have none; padding positions are masked out anyway
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = "right"
    return tok


def tokenize(tok, texts: list[str], seq_len: int, names: list[str]) -> list[torch.Tensor]:
    enc = tok(list(texts), padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    out = []
    for name in names:
        if name in enc:
            out.append(enc[name])
        elif name == "token_type_ids":
            out.append(torch.zeros_like(enc["input_ids"]))
        else:
            raise UsageError(f"the tokenizer gives no {name!r}", "convert the model with its own tokenizer")
    return out


def tokenizer_record(tok, seq_len: int) -> dict[str, Any]:
    return {"tokenizer": type(tok).__name__, "vocab_size": len(tok), "max_length": seq_len,
            "padding": "max_length (right)", "truncation": True, "pad_token": tok.pad_token}


def _top_k_sampler(k: int, temperature: float, generator: torch.Generator):
    """A logits processor that makes greedy decoding sample from the top-k softmax at `temperature`: the argmax of
    logits / T + Gumbel noise is an exact draw (the Gumbel-max trick), without torch.multinomial over the whole
    vocabulary (measured here: most of a small model's generation time)."""
    from transformers import LogitsProcessor

    class TopKGumbel(LogitsProcessor):
        def __call__(self, input_ids, scores):
            v, i = scores.float().topk(min(k, scores.shape[-1]), -1)
            u = torch.rand(v.shape, generator=generator).to(scores.device).clamp_(1e-20, 1.0)
            out = torch.full_like(scores, -math.inf)
            return out.scatter_(-1, i, (v / temperature - torch.log(-torch.log(u))).to(scores.dtype))

    return TopKGumbel()


def generate(model, tok, n: int, seq_len: int, *, seed: int = GENERATION["seed"]) -> list[str]:
    """N samples written by `model` (which must be in its digital state) from corpus prompts, seeded."""
    from transformers import LogitsProcessorList

    prompts_src = corpus("train")
    words = GENERATION["prompt_words"]
    prompts = [" ".join(prompts_src[i % len(prompts_src)].split()[:words]) for i in range(n)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = []
    side = tok.padding_side
    tok.padding_side = "left"  # decoder-only models continue from the right end
    sampler = _top_k_sampler(GENERATION["top_k"], GENERATION["temperature"], torch.Generator().manual_seed(seed))
    try:
        with torch.no_grad():
            for i in range(0, n, 32):
                enc = tok(prompts[i:i + 32], return_tensors="pt", padding=True)
                enc = {k: enc[k].to(device) for k in ("input_ids", "attention_mask")}
                ids = model.generate(**enc, max_new_tokens=max(1, seq_len - enc["input_ids"].shape[1]),
                                     do_sample=False, logits_processor=LogitsProcessorList([sampler]),
                                     pad_token_id=tok.pad_token_id)
                out += tok.batch_decode(ids, skip_special_tokens=True)
    finally:
        tok.padding_side = side
        model.train(was_training)
    return [t.strip() or p for t, p in zip(out, prompts)]


def load(spec: str, package_path: str | Path, config: dict[str, Any], model=None) -> TextData:
    """The text dataset named by `spec`, tokenised for the package at `package_path`.

    `model` (the package's model, noise off) is needed only for generated:N.
    """
    kind, arg = parse(spec)
    record = Record.of(config)
    seq_len, names = record.seq_len, list(record.input_names)
    tok = tokenizer_for(package_path, config)
    prov: dict[str, Any] = {"spec": spec, **tokenizer_record(tok, seq_len)}
    labels = None
    label_names = None
    num_classes = None
    if kind == "corpus":
        train_texts = corpus("train")
        kept, held = holdout(len(train_texts), int(CORPUS_VAL * len(train_texts)))
        parts = ([train_texts[i] for i in kept], [train_texts[i] for i in held], corpus("heldout"))
        prov["source"] = "analogai_deploy/data/corpus (train.txt -> train/val, heldout.txt -> test)"
    else:
        if kind == "text":
            texts, raw_labels = read_file(arg)
            prov["source"] = str(Path(arg).resolve())
            prov["file_sha256"] = sha256_file(arg)  # certify knows the file again wherever it is moved
            if raw_labels is not None:  # mapped through the package's own label names (labels.py)
                from ..labels import ids

                labels, label_names, num_classes = ids(raw_labels, config, spec)
        else:
            if not record.causal_lm:
                raise UsageError(f"generated:{arg} needs a causal language model (this package's task is "
                                 f"{config.get('task')})", "use `data=corpus` or text:FILE")
            if model is None:
                raise UsageError("generated:N needs the package's model to write the samples")
            texts = generate(model, tok, int(arg), seq_len)
            prov["generation"] = {**GENERATION, "n": int(arg), "prompts": "first words of corpus/train.txt"}
            prov["source"] = "generated by the package's digital model"
        if len(texts) < 3:
            raise UsageError(f"{spec} holds {len(texts)} examples; a train/val/test split needs at least 3")
        idx = split(len(texts))
        parts = tuple([texts[i] for i in part] for part in idx)
        if labels is not None:
            label_parts = [labels[torch.tensor(part, dtype=torch.long)] for part in idx]
    datasets = []
    h = hashlib.sha256(json.dumps(prov, sort_keys=True).encode())
    for p, texts in enumerate(parts):
        tensors = tokenize(tok, texts, seq_len, names)
        target = label_parts[p] if labels is not None else torch.arange(len(texts))
        for t in (*tensors, target):
            h.update(t.contiguous().numpy().tobytes())
        datasets.append(TextTensors(names, tensors, target))
    prov["sizes"] = {"train": len(parts[0]), "val": len(parts[1]), "test": len(parts[2])}
    prov["labelled"] = labels is not None
    if kind == "generated":
        prov["text_sha256"] = hashlib.sha256("\n".join(t for part in parts for t in part).encode()).hexdigest()
    if label_names:
        prov["label_names"] = label_names
    return TextData(spec, *datasets, num_classes, [seq_len], h.hexdigest(), prov, label_names)
