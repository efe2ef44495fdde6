"""The fast engine's device state: programming and drift of every bank with aihwkit's noise model (or
hardware/pcm.py's native pass), and the drift compensation's readout."""
from __future__ import annotations

import torch

from .banks import Bank
from ...hardware.draws import threaded_native
from .periphery import quant_step

#: weights per call of the noise model on a bank: small tiles go many to a call (the per-call cost
#: dominates), large ones one at a time (element-wise temporaries of ~1 MB stay in cache)
BATCH_ELEMENTS = 1 << 18


class DeviceState:
    """FastLayer's programming and drift (aihwkit's own classes, or hardware/pcm.py's native pass for its PCM)."""

    def _readout_args(self) -> tuple[float, float, float, float]:
        """native readout's periphery: (q1, out_noise, ADC step or 0, out_bound or 0)."""
        io = self.io
        return (self.q1, float(io.out_noise), quant_step(io.out_res, io.out_bound) if io.out_res > 0 else 0.0,
                io.out_bound if io.out_bound > 0 else 0.0)

    def _native_readout(self, weights: torch.Tensor) -> bool:
        """Whether the readout of these weights runs in native code (global compensation, one-hot rows)."""
        return (self.compensation is not None and self.one_hot_readout and not self.perfect
                and not self.per_column and threaded_native(weights) is not None)

    def readout_bank(self, bank: Bank, weights: torch.Tensor, native=None) -> torch.Tensor:
        """The compensation's readout of each tile's forward on its read-out tensor (one-hot rows): [T]
        (global), [T, rows] (per column: the mean over the inputs of each output). `native`: the
        (means, peaks) of the native readout, already computed (fused into the PCM drift pass)."""
        out = None
        if self.one_hot_readout and not self.perfect:
            # one-hot rows: noise management scales by 1, the DAC maps 1 to q1, so the MVM is q1 * W^T
            # exactly; the periphery then runs as usual (the full path for the tiles that clip)
            lib = threaded_native(weights) if not self.per_column else None
            if native is not None:
                means, peaks = native
            if lib is not None or native is not None:  # noise, ADC, bound test, mean |.|: one pass per tile
                io = self.io
                if native is None:
                    w = weights.contiguous()
                    means = torch.empty(w.shape[0], dtype=torch.float64)
                    peaks = torch.empty(w.shape[0])
                    lib.readout_many(w.data_ptr(), w.shape[0], w[0].numel(), *self._readout_args(),
                                     int(torch.randint(0, 2**62, ()).item()), means.data_ptr(), peaks.data_ptr())
                vals = torch.clamp(means.float(), min=0.0001)  # GlobalDriftCompensation.readout per tile
                ok = peaks <= io.out_bound if io.out_bound > 0 else torch.ones_like(peaks, dtype=torch.bool)
            else:
                y = weights * self.q1  # = (eye @ W^T) per tile, transposed: [T, rows = outputs, inputs]
                ok = self.finalize_tiles(y, [slice(None)], dim=None)
                vals = torch.clamp(y.abs().mean(2 if self.per_column else (1, 2)), min=0.0001)  # .readout per tile
            if bool(ok.all()):
                return vals
            out = vals
            for i in torch.nonzero(~ok).flatten().tolist():
                out[i] = self._readout_one(weights[i])
            return out
        return torch.stack([self._readout_one(w) for w in weights])

    def _readout_one(self, weights: torch.Tensor) -> torch.Tensor:
        n = weights.shape[1]
        if n not in self.eye:
            self.eye[n] = self.compensation.get_readout_tensor(n)
        return self.compensation.readout(self.tile_mvm(self.eye[n], weights))

    def _batched_model(self) -> bool:
        from aihwkit.inference import PCMLikeNoiseModel
        from aihwkit.inference.converter.conductance import SinglePairConductanceConverter

        nm = self.noise_model
        return type(nm) is PCMLikeNoiseModel and type(nm.g_converter) is SinglePairConductanceConverter

    @staticmethod
    def _slices(bank: Bank) -> list[slice]:
        per = max(1, BATCH_ELEMENTS // bank.ref[0].numel())
        return [slice(i, i + per) for i in range(0, bank.ref.shape[0], per)]

    def _to_g(self, w: torch.Tensor, ratio: torch.Tensor) -> list[torch.Tensor]:
        conv = self.noise_model.g_converter
        scaled = w * ratio
        return [scaled.clamp(min=0.0, max=conv.g_max) + conv.g_min,
                (-scaled).clamp(min=0.0, max=conv.g_max) + conv.g_min]

    def _ratio(self, w: torch.Tensor) -> torch.Tensor:
        """SinglePairConductanceConverter's scale_ratio of every tile of a stack, [T, 1, 1]."""
        conv = self.noise_model.g_converter
        return (conv.g_max - conv.g_min) / w.abs().amax((1, 2), keepdim=True).clamp(min=1e-7)  # _ZERO_CLIP

    def _from_g(self, g: list[torch.Tensor], ratio: torch.Tensor) -> torch.Tensor:
        conv = self.noise_model.g_converter
        return ((g[0] - conv.g_min) - (g[1] - conv.g_min)) / ratio

    @torch.no_grad()
    def program(self) -> None:
        from ...hardware import pcm

        batched = self._batched_model()
        nm = self.noise_model
        for bank in self.banks:
            if pcm.available(nm, bank.ref):  # aihwkit's PCM maths in one native pass (hardware/pcm.py)
                bank.programmed, bank.nu, bank.q = pcm.program(bank.ref, nm)
            elif batched:  # the same element-wise functions aihwkit's apply_programming_noise calls, per tile ratios
                progs, nus = [], []
                for sl in self._slices(bank):
                    ref = bank.ref[sl]
                    ratio = self._ratio(ref)
                    g = self._to_g(ref, ratio)
                    prog = [nm.apply_programming_noise_to_conductance(gi) for gi in g]
                    nus.append([nm.generate_drift_coefficients(gi) for gi in g])
                    progs.append(self._from_g(prog, ratio))
                bank.programmed = progs[0] if len(progs) == 1 else torch.cat(progs)
                bank.nu, bank.q = nus, None
            else:
                pairs = [nm.apply_programming_noise(r) for r in bank.ref]
                bank.programmed = torch.stack([p for p, _ in pairs])
                bank.nu, bank.q = [nu for _, nu in pairs], None
            bank.current = bank.programmed
            bank.alpha = torch.ones(bank.ref.shape[0])
            if self.compensation is not None:
                bank.baseline = self.readout_bank(bank, bank.programmed)
        self.effective = None

    @torch.no_grad()
    def drift(self, seconds: float) -> None:
        from ...hardware import pcm

        batched = self._batched_model()
        nm = self.noise_model
        for bank in self.banks:
            if bank.q is not None and pcm.available(nm, bank.programmed):  # programmed natively
                fused = self._native_readout(bank.programmed)
                bank.current, means, peaks = pcm.drift(bank.programmed, bank.nu, bank.q, nm, seconds, out=bank.buffer,
                                                       readout=self._readout_args() if fused else None)
                bank.buffer = bank.current
                if self.compensation is not None:
                    bank.alpha = bank.baseline / self.readout_bank(bank, bank.current,
                                                                    (means, peaks) if fused else None)
                continue
            if batched:
                parts = []
                for sl, nus in zip(self._slices(bank), bank.nu):
                    prog = bank.programmed[sl]
                    ratio = self._ratio(prog)  # aihwkit converts the programmed weights by their own max
                    g = self._to_g(prog, ratio)
                    parts.append(self._from_g([nm.apply_drift_noise_to_conductance(gi, nu, seconds)
                                               for gi, nu in zip(g, nus)], ratio))
                bank.current = parts[0] if len(parts) == 1 else torch.cat(parts)
            else:
                bank.current = torch.stack([nm.apply_drift_noise(p, nu, seconds)
                                            for p, nu in zip(bank.programmed, bank.nu)])
            if self.compensation is not None:
                bank.alpha = bank.baseline / self.readout_bank(bank, bank.current)  # compensation.apply
        self.effective = None
