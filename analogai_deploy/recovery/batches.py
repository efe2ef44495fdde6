"""The training device and the mini-batches on it: tensor datasets move to the device once and are indexed
there; other datasets go through a DataLoader."""
from __future__ import annotations

import math
import os

import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..errors import AnalogAIError, UsageError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"training.device={name} but no CUDA device is available", "use training.device=auto or cpu")
    return dev


class Batches:
    """Mini-batches of a dataset. Tensor datasets move to the device once and are indexed there."""

    def __init__(self, dataset: Dataset, batch_size: int, device: torch.device):
        self.batch_size = batch_size
        self.device = device
        self.n = len(dataset)
        self.tensors = None
        if isinstance(dataset, TensorDataset):
            self.tensors = [t.to(device) for t in dataset.tensors]
        self.dataset = dataset

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def iterate(self, generator: torch.Generator | None = None):
        order = torch.randperm(self.n, generator=generator) if generator is not None else torch.arange(self.n)
        if self.tensors is not None:
            order = order.to(self.device)
            text = getattr(self.dataset, "batch", None)  # text: (named token tensors, target), padding cut
            for i in range(0, self.n, self.batch_size):
                idx = order[i:i + self.batch_size]
                rows = tuple(t.index_select(0, idx) for t in self.tensors)
                yield text(rows) if text is not None else rows
            return
        pin = self.device.type == "cuda"
        loader = DataLoader(Subset(self.dataset, order.tolist()), batch_size=self.batch_size, shuffle=False,
                            num_workers=min(4, os.cpu_count() or 1), pin_memory=pin)
        try:
            for x, y in loader:
                yield x.to(self.device, non_blocking=pin), y.to(self.device, non_blocking=pin)
        except AnalogAIError as exc:  # a worker's error comes back with the worker's traceback as its message
            if "DataLoader worker" not in exc.message:
                raise
            raise type(exc)(exc.message.rstrip().splitlines()[-1].split(": ", 1)[-1]) from None
