"""The training weight noise's generator in C (normal.c), compiled on first use with the system's C
compiler and loaded with ctypes; None where there is no compiler (or ANALOGAI_NATIVE_NOISE=0), and
the layers then use torch's own normal_. The fast certify engine's tile periphery (`periphery`,
`readout`: noise, ADC, bound test, clipping and the digital factors in one pass) lives there too, and
so do its PCM conductance functions (`pcm_program`, `pcm_drift`: aihwkit's PCMLikeNoiseModel maths).

Why: on the CPU, torch's normal_ (mt19937 + Box-Muller) costs ~4 ns a number, ~10% of a ResNet-18
training step at 3x32x32; normal.c writes x + s * z in one pass at ~1 ns a number. Each call takes
its seed from torch's default generator, so torch.manual_seed keeps runs reproducible and every pass
and every client draws fresh, independent numbers (tests/test_noise.py checks the statistics).
The library is cached per source, flags and CPU under ~/.cache/analogai_deploy (ANALOGAI_CACHE).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

# no FMA contraction: the periphery matches torch's separate multiply and add bit for bit
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off", "-fPIC", "-shared"]
_SOURCE = Path(__file__).with_name("normal.c")
_lib: ctypes.CDLL | None | bool = False  # False: not tried yet


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build() -> ctypes.CDLL | None:
    if os.environ.get("ANALOGAI_NATIVE_NOISE", "1") == "0":
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None or not _SOURCE.is_file():
        return None
    src = _SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join(FLAGS + ["-fopenmp?"]).encode() + platform.machine().encode() + _cpu().encode()).hexdigest()
    root = Path(os.environ.get("ANALOGAI_CACHE") or Path.home() / ".cache" / "analogai_deploy") / "native"
    lib_path = root / f"normal-{key[:16]}.so"
    try:
        if not lib_path.is_file():
            root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=root, suffix=".so")  # build aside, then rename: ranks may race
            os.close(fd)
            try:
                try:  # OpenMP where the compiler has it (the fast engine's threads), else one thread
                    subprocess.run([cc, *FLAGS, "-fopenmp", str(_SOURCE), "-o", tmp], check=True, capture_output=True,
                                   timeout=120)
                except subprocess.CalledProcessError:
                    subprocess.run([cc, *FLAGS, str(_SOURCE), "-o", tmp], check=True, capture_output=True, timeout=120)
                os.replace(tmp, lib_path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        lib = ctypes.CDLL(str(lib_path))
    except (OSError, subprocess.SubprocessError):
        return None
    lib.set_threads.argtypes = [ctypes.c_int]
    lib.set_threads.restype = None
    lib.add_normal.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_uint64]
    lib.add_normal.restype = None
    f32p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.periphery.argtypes = [f32p, i64, i64, i64, f32p, i64, ctypes.c_float, ctypes.c_int, f32p, f32p,
                              ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_uint64, f32p]
    lib.periphery.restype = None
    lib.readout.argtypes = [f32p, i64, ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_float,
                            ctypes.c_uint64, f32p]
    lib.readout.restype = ctypes.c_double
    lib.readout_many.argtypes = [f32p, i64, i64, ctypes.c_float, ctypes.c_float, ctypes.c_float, ctypes.c_float,
                                 ctypes.c_uint64, f32p, f32p]
    lib.readout_many.restype = None
    f32, u64 = ctypes.c_float, ctypes.c_uint64
    lib.pcm_program.argtypes = [f32p, i64, i64, f32p, f32, f32, f32, f32, u64, f32p, f32p, f32p]
    lib.pcm_program.restype = None
    lib.pcm_drift.argtypes = [f32p, f32p, f32p, i64, i64, f32, f32, u64, f32p, ctypes.c_int, f32, f32, f32, f32,
                              f32p, f32p]
    lib.pcm_drift.restype = None
    lib.add_normal_rel.argtypes = [f32p, f32p, i64, f32, u64]
    lib.add_normal_rel.restype = f32
    lib.count_zeros.argtypes = [f32p, i64]
    lib.count_zeros.restype = i64
    lib.patch_absmax.argtypes = [f32p, i64, i64, i64, f32p, i64, f32p, f32p, f32p, f32p] + [i64] * 11 + [f32p, f32p, f32p]
    lib.patch_absmax.restype = None
    lib.tile_weights.argtypes = [f32p, f32p, i64, i64, ctypes.c_int, ctypes.c_int, f32, f32p, f32, u64, f32p, f32p]
    lib.tile_weights.restype = None
    lib.tile_dac.argtypes = [f32p, f32p, i64, i64, ctypes.c_int, f32p, f32p]
    lib.tile_dac.restype = None
    lib.tile_adc.argtypes = [f32p, i64, i64, f32p, f32p, f32p, f32, ctypes.c_int, f32, u64]
    lib.tile_adc.restype = None
    return lib


def library() -> ctypes.CDLL | None:
    global _lib
    if _lib is False:
        _lib = _build()
    return _lib  # type: ignore[return-value]
