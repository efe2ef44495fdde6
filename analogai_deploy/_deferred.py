"""One third-party import deferred to its first use, for start-up (BENCHMARKS.md, start-up).

aihwkit's tile periphery imports its digital low-precision quantizers, whose range estimators import
scipy.optimize at module level (~0.4 s of CPU, a fifth of a LeNet certify's start-up) for one function,
minimize_scalar, which only their MSE range estimation calls; nothing in this toolkit does. `install()`
(run by `import analogai_deploy`) puts a finder on sys.meta_path that acts on that one module only: while it
executes, `from scipy.optimize import minimize_scalar` binds a forwarder that imports the real function on
its first call. Once scipy.optimize is imported anyway the finder steps aside, and after that module it leaves
sys.modules as it was, so any later `import scipy.optimize` gets the real one.
"""
from __future__ import annotations

import sys
import types

TARGET = "aihwkit.simulator.digital_low_precision.range_estimators"


def _minimize_scalar(*args, **kwargs):
    from scipy.optimize import minimize_scalar

    return minimize_scalar(*args, **kwargs)


class _Finder:
    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET or "scipy.optimize" in sys.modules:
            return None
        import importlib.machinery

        spec = None
        for finder in sys.meta_path[sys.meta_path.index(self) + 1:]:  # the real spec: what the rest would find
            spec = getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None:
                break

        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None  # only a loader of this one file is changed, never a shared one
        exec_module = spec.loader.exec_module

        def deferred_exec(module):
            import scipy  # the package itself is cheap; the stand-in below is its `optimize` for this module only

            stand_in = types.ModuleType("scipy.optimize", "aihwkit's import of minimize_scalar, forwarded (see "
                                        f"{__name__})")
            stand_in.minimize_scalar = _minimize_scalar
            sys.modules["scipy.optimize"] = stand_in
            try:
                exec_module(module)
            finally:
                if sys.modules.get("scipy.optimize") is stand_in:
                    del sys.modules["scipy.optimize"]
                if vars(scipy).get("optimize") is stand_in:  # not getattr: scipy's __getattr__ would import it
                    del scipy.optimize

        spec.loader.exec_module = deferred_exec
        return spec


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
