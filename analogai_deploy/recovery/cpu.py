"""The CPU while training: torch's thread count for the model at hand, and glibc keeping freed memory."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

SMALL_MODEL = 1_000_000  # parameters; below this one CPU thread is faster (kernels too small to split)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Let this process reuse the memory it frees (glibc; elsewhere nothing happens): blocks are never given
    back to the system (no trim) nor mapped one by one (glibc maps every block over 32 MB, the largest
    threshold it accepts, and unmaps it on free). Training a language model allocates and frees its logits
    (tokens x vocabulary, 125 MB for 1024 tokens of a 30k vocabulary) several times per pass; mapped afresh,
    each is zeroed page by page by the kernel: a 30k-vocabulary LM's digital step spent 757 of its 1108 ms of
    CPU in the kernel, none with this (BENCHMARKS.md section 2). The process keeps its peak memory. Returns
    whether the setting took."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, -1))  # -1: never trim
    except (OSError, AttributeError):  # not glibc
        return False


@contextmanager
def cpu_threads(requested: int, model: nn.Module, device: torch.device):
    """torch's CPU threads while training: `requested`, or for 0 one thread for small models on CPU.

    Measured on 2 busy cores, LeNet/digits MSNAT: 1 thread 5 s CPU per 3 rounds, 2 threads many times
    that in spin-waiting; small kernels gain nothing from a second thread. On the CPU the process also keeps
    the memory it frees (`keep_freed_memory`).
    """
    before = torch.get_num_threads()
    if device.type == "cpu":
        keep_freed_memory()
    n = requested or (1 if device.type == "cpu" and sum(p.numel() for p in model.parameters()) < SMALL_MODEL else 0)
    if n:
        torch.set_num_threads(n)
    try:
        yield n or before
    finally:
        torch.set_num_threads(before)
