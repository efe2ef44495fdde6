"""Datasets in their on-disk formats, made from the bundled digits (no download)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def cifar10_from_digits(root: Path, per_batch: int = 20, test: int = 40) -> Path:
    """A CIFAR-10 binary-version folder (cifar-10-batches-bin/: data_batch_1..5.bin, test_batch.bin,
    batches.meta.txt) holding digits 0-9 as 32x32 RGB images: the real format, tiny contents."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.kron(d.images / 16.0, np.ones((4, 4)))  # 8x8 -> 32x32, nearest
    pixels = (images * 255).round().astype(np.uint8)
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, idx: np.ndarray) -> None:
        rgb = np.stack([pixels[idx]] * 3, axis=1).reshape(len(idx), -1)  # R, G, B planes
        records = np.concatenate([d.target[idx].astype(np.uint8)[:, None], rgb], axis=1)
        records.tofile(folder / name)

    order = np.random.default_rng(0).permutation(len(d.target))
    for i in range(5):
        write(f"data_batch_{i + 1}.bin", order[i * per_batch:(i + 1) * per_batch])
    write("test_batch.bin", order[5 * per_batch:5 * per_batch + test])
    (folder / "batches.meta.txt").write_text("\n".join(str(k) for k in range(10)) + "\n")
    return Path(root)
