"""Datasets by spec string, split the same way every time.

    digits                 scikit-learn's bundled 8x8 digits (1,797 real images, no download)
    cifar10:PATH           CIFAR-10 already on disk under PATH: the binary version (cifar-10-batches-bin/, read
                           here without pickle) or torchvision's python version (cifar-10-batches-py/)
    mnist:PATH             torchvision MNIST already on disk under PATH
    imagefolder:PATH       one sub-folder per class

Text packages take corpus, text:FILE and generated:N instead (data/text.py).

Images are shaped to the model's input (channels replicated, bilinear resize) and normalised with
the dataset's mean/std; `Data.pixel_bounds` gives the valid range of a normalised input so that
adversarial perturbations stay inside real pixel values.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from ..errors import UsageError, unknown
from .base import IMAGE_KINDS, TEXT_KINDS, holdout, split


@dataclass
class Data:
    """An image dataset (implements data.base.SplitData)."""

    text: ClassVar[bool] = False
    spec: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: list[int]
    mean: list[float]
    std: list[float]
    fingerprint: str  # sha256 over the test set's contents (digits) or its file list (folders)
    labels: list[str] | None = None  # class names in id order (digits / mnist: "0" ... "9"; folders: their names)
    provenance: dict[str, Any] = field(default_factory=dict)  # nothing beyond the spec and fingerprint, for images

    @property
    def labelled(self) -> bool:
        return True

    def example(self, device: torch.device | str = "cpu") -> None:
        """Images: a zero input of input_shape stands in for a sample."""
        return None

    def pixel_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (low, high) of a normalised input whose pixels lie in [0, 1], shaped (C, 1, 1)."""
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (0 - mean) / std, (1 - mean) / std

    @property
    def std_tensor(self) -> torch.Tensor:
        return torch.tensor(self.std).view(-1, 1, 1)

    def relabel(self, order: list[int], names: list[str]) -> Data:
        """This data with its class i as class order[i], named `names` (a package's own order, labels.py)."""
        relabel = _Relabel(order)
        for split in ("train", "val", "test"):
            ds = getattr(self, split)
            if isinstance(ds, TensorDataset):
                x, y = ds.tensors
                setattr(self, split, TensorDataset(x, torch.tensor(order)[y]))
            else:  # folder datasets: their targets pass through the base dataset's target_transform
                (ds.dataset if isinstance(ds, Subset) else ds).target_transform = relabel
        self.num_classes, self.labels = len(names), list(names)
        return self


class _Relabel:
    """target_transform: a class id -> the package's id (a class, not a lambda: data loaders may pickle it)."""

    def __init__(self, order: list[int]):
        self.order = list(order)

    def __call__(self, y: int) -> int:
        return self.order[y]


def parse(spec: str) -> tuple[str, str | None]:
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in IMAGE_KINDS:
        if kind in TEXT_KINDS:
            raise UsageError(f"`data={spec}` is text; this package takes images", "use e.g. `data=digits`")
        raise unknown("dataset", kind, IMAGE_KINDS + TEXT_KINDS)
    if kind == "digits":
        if arg:
            raise UsageError(f"digits takes no path (got {arg!r})", "write `data=digits`")
        return kind, None
    if not arg:
        raise UsageError(f"{kind} needs a local path", f"write `data={kind}:/path/to/data` (nothing is downloaded)")
    if not Path(arg).exists():
        raise UsageError(f"dataset path not found: {arg}", f"put the {kind} data there or pass the right path")
    return kind, arg


def load(spec: str, input_shape: list[int] | None = None) -> Data:
    """Load the dataset named by `spec`, shaped to `input_shape` ([C, H, W]) when given."""
    kind, arg = parse(spec)
    if kind == "digits":
        return _digits(spec, input_shape)
    return _torchvision(kind, arg, spec, input_shape)


def _check_splits(spec: str, train: Dataset, val: Dataset, test: Dataset) -> None:
    """Training needs a train and a validation split, certify a test split: refuse a dataset too small
    for the fixed 70/15/15 split (fewer than 3 samples) here, naming the counts, rather than divide by zero later."""
    sizes = {"train": len(train), "val": len(val), "test": len(test)}
    empty = [name for name, size in sizes.items() if size == 0]
    if empty:
        total = sum(sizes.values())
        counts = " / ".join(f"{size} {name}" for name, size in sizes.items())
        raise UsageError(f"{spec} has {total} sample{'s' if total != 1 else ''}, split {counts}: "
                         f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty",
                         "give it at least 3 samples (every split needs one); numbers mean something "
                         "only with hundreds")


def shape_images(x: torch.Tensor, input_shape: list[int] | None) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> the model's channels and size."""
    if not input_shape:
        return x
    c, h, w = input_shape
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif c == 1:
            x = x.mean(1, keepdim=True)
        else:
            raise UsageError(f"cannot map {x.shape[1]}-channel images to {c} channels")
    if tuple(x.shape[2:]) != (h, w):
        x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    return x.contiguous()


def _digits_arrays():
    """scikit-learn's bundled digits (images [1797, 8, 8], targets), read from its CSV without importing
    sklearn (~1.5 s of start-up): the same file and parse as sklearn.datasets.load_digits."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    import gzip

    import numpy as np

    with gzip.open(path, "rt") as f:
        raw = np.loadtxt(f, delimiter=",")
    return raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(int)


def _digits(spec: str, input_shape: list[int] | None) -> Data:
    images, target = _digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(target, dtype=torch.long)
    x = shape_images(x, input_shape)
    tr, va, te = split(len(y))
    mean = x[tr].mean(dim=(0, 2, 3)).tolist()
    std = x[tr].std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
    xn = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    fp = hashlib.sha256(x[te].numpy().tobytes() + y[te].numpy().tobytes()).hexdigest()
    return Data(
        spec, TensorDataset(xn[tr], y[tr]), TensorDataset(xn[va], y[va]), TensorDataset(xn[te], y[te]),
        10, list(x.shape[1:]), mean, std, fp, DIGITS,
    )


_STATS = {
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616], [3, 32, 32]),
    "mnist": ([0.1307], [0.3081], [1, 28, 28]),
    "imagefolder": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], [3, 224, 224]),
}


DIGITS = [str(i) for i in range(10)]  # digits and MNIST: the class is the digit
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_BIN = "cifar-10-batches-bin"
CIFAR_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
CIFAR_TEST = "test_batch.bin"
_RECORD = 1 + 3 * 32 * 32  # label byte, then 1024 red, 1024 green, 1024 blue bytes (row-major 32x32)


def cifar_binary_folder(root: str | Path) -> Path | None:
    """The folder holding CIFAR-10's binary batches under `root` (root itself or root/cifar-10-batches-bin)."""
    for folder in (Path(root), Path(root) / CIFAR_BIN):
        if (folder / CIFAR_TEST).is_file():
            return folder
    return None


def _read_cifar_bin(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np

    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise UsageError(f"{path} is not a CIFAR-10 binary batch ({raw.size} bytes, not a multiple of {_RECORD})",
                         "use the files of the CIFAR-10 binary version, unchanged")
    records = raw.reshape(-1, _RECORD)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    if int(labels.max()) > 9:
        raise UsageError(f"{path} holds labels above 9; not a CIFAR-10 batch")
    images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy()).float() / 255.0
    return images, labels


def _cifar_binary(folder: Path, spec: str, input_shape: list[int] | None) -> Data:
    """CIFAR-10's binary version: fixed-size records, read without unpickling anything."""
    mean, std, native = _STATS["cifar10"]
    missing = [f for f in CIFAR_TRAIN if not (folder / f).is_file()]
    if missing:
        raise UsageError(f"cannot read cifar10 under {folder}: {', '.join(missing)} missing",
                         "nothing is downloaded: place the CIFAR-10 binary batches there first")
    parts = [_read_cifar_bin(folder / f) for f in CIFAR_TRAIN]
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    xt, yt = _read_cifar_bin(folder / CIFAR_TEST)
    shape = list(input_shape or native)
    if shape[0] != 3:
        mean, std = [sum(mean) / 3] * shape[0], [sum(std) / 3] * shape[0]
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    x = (shape_images(x, shape) - m) / s
    xt = (shape_images(xt, shape) - m) / s
    train, val = holdout(len(y), len(y) // 10)
    h = hashlib.sha256(b"cifar10-bin")
    h.update((folder / CIFAR_TEST).read_bytes())
    return Data(spec, TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val]), TensorDataset(xt, yt),
                10, shape, list(mean), list(std), h.hexdigest(), CIFAR_CLASSES)


def _read_image(path: str):
    """One image of an image folder; a file PIL cannot read is the user's, named (not a crash)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError, truncated data, bad headers
        why = ("no image format recognised (a corrupt file, or not an image)" if isinstance(exc, UnidentifiedImageError)
               else (str(exc).splitlines() or [type(exc).__name__])[0])
        raise UsageError(f"cannot read the image {path}: {why}",
                         "replace or delete that file: every file in the class folders must be an image") from None


def _torchvision(kind: str, root: str, spec: str, input_shape: list[int] | None) -> Data:
    if kind == "cifar10" and cifar_binary_folder(root) is not None:
        return _cifar_binary(cifar_binary_folder(root), spec, input_shape)
    import torchvision
    from torchvision import transforms as T

    mean, std, native = _STATS[kind]
    shape = list(input_shape or native)
    channels = shape[0]
    if channels != len(mean):
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    tf = T.Compose([
        T.Grayscale(channels) if channels == 1 or kind == "mnist" else T.Lambda(lambda im: im.convert("RGB")),
        T.Resize(tuple(shape[1:])),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])
    try:
        if kind == "cifar10":
            full = torchvision.datasets.CIFAR10(root, train=True, transform=tf, download=False)
            test = torchvision.datasets.CIFAR10(root, train=False, transform=tf, download=False)
            files = [str(n) for n in full.data.shape] + [str(len(test))]
        elif kind == "mnist":
            full = torchvision.datasets.MNIST(root, train=True, transform=tf, download=False)
            test = torchvision.datasets.MNIST(root, train=False, transform=tf, download=False)
            files = [str(len(full)), str(len(test))]
        else:
            full = torchvision.datasets.ImageFolder(root, transform=tf, loader=_read_image)
            test = None
            files = [p for p, _ in full.samples]
    except (RuntimeError, FileNotFoundError) as exc:
        raise UsageError(f"cannot read {kind} under {root}: {str(exc).splitlines()[0]}",
                         "nothing is downloaded: place the dataset files there first") from None
    classes = len(full.classes)
    names = {"mnist": DIGITS, "cifar10": CIFAR_CLASSES}.get(kind, [str(c) for c in full.classes])
    if test is None:
        tr, va, te = split(len(full))
        train, val, test_ds = Subset(full, tr), Subset(full, va), Subset(full, te)
    else:
        tr, va = holdout(len(full), len(full) // 10)
        train, val, test_ds = Subset(full, tr), Subset(full, va), test
    _check_splits(spec, train, val, test_ds)
    fp = hashlib.sha256("\n".join([kind, *files]).encode()).hexdigest()
    return Data(spec, train, val, test_ds, classes, shape, list(mean), list(std), fp, names)
