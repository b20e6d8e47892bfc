"""Which floating-point precision a run (or an analysis) uses on this machine, and why.

`amp` is "auto", "on" or "off". "on" is reduced precision wherever there is one (bf16 autocast
on a CPU; bf16 on a CUDA device that supports it, else fp16 with a gradient scaler); "off" is
float32 everywhere. "auto" asks the machine:

- CUDA: reduced precision (as "on"); it is faster on every GPU this project targets.
- CPU without native bf16 (neither AVX512-BF16 nor AMX-BF16 in its flags): float32, with no
  measurement. There, bf16 autocast is emulated and was measured 9× *slower* than float32
  (AMD EPYC Zen 3, the default SwAV step: 32 vs 298 crops/s).
- CPU with native bf16: a short measurement (≤ ~2 s) of the caller's own workload in both
  precisions, interleaved so that a second process loading the machine slows both alike;
  bf16 only when it is clearly faster. The measurement, not the flag, decides, because the
  ISA oneDNN really uses can be capped (`ONEDNN_MAX_CPU_ISA=AVX2`) below what the flags say.

Written by hand: no library decides this; torch exposes the CPU flags and autocast only.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, get_args

import torch

from models.config import AmpMode

AMP_MODES: tuple[str, ...] = get_args(AmpMode)

# bf16 must beat float32 by this factor in the measurement to be chosen: a near-tie is not
# worth bf16's lost precision (3 significant digits).
MIN_SPEEDUP = 1.15
# Upper bound on the measurement's wall time (both precisions together), in seconds.
PROBE_BUDGET_S = 2.0
PROBE_ROUNDS = 3  # timed calls per precision after one warm-up each, fewer if over budget

# A workload to time: called with the autocast context to run it under; it must not change
# anything the caller keeps (work on a copy of the model).
Probe = Callable[[AbstractContextManager[Any]], None]


@dataclass(frozen=True)
class Precision:
    """The decision: what autocast runs (if any) and the sentence that says why."""

    mode: str  # what was asked: auto | on | off
    device_type: str  # cpu | cuda | …
    dtype: str  # "float32", "bfloat16" or "float16": the compute dtype of autocast regions
    reason: str
    measured_ms: dict[str, float] = field(default_factory=dict)  # per call, when measured

    @property
    def enabled(self) -> bool:
        return self.dtype != "float32"

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has float32's range."""
        return self.dtype == "float16"

    def autocast(self) -> AbstractContextManager[Any]:
        if not self.enabled:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.torch_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.needs_grad_scaler else None

    def as_event(self) -> dict[str, Any]:
        """JSON-ready, for the run's `start` event and the CLI."""
        return asdict(self)

    def summary(self) -> str:
        return f"precision {self.dtype} (amp {self.mode}): {self.reason}"


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below the first one with bf16 arithmetic
# (avx512_core_bf16): under these, bf16 convolutions are emulated whatever the CPU can do.
ISAS_WITHOUT_BF16 = frozenset(
    {"sse41", "avx", "avx2", "avx2_vnni", "avx512_core", "avx512_core_vnni", "avx512_mic"}
)


def isa_cap_without_bf16() -> str | None:
    """The ONEDNN_MAX_CPU_ISA (or older DNNL_MAX_CPU_ISA) value when it rules bf16 out."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(name, "").strip().lower()
        if value in ISAS_WITHOUT_BF16:
            return f"{name}={value.upper()}"
    return None


def cpu_has_native_bf16() -> bool | None:
    """True/False from the CPU's flags (AVX512-BF16 or AMX-BF16) and the oneDNN ISA cap;
    None when torch cannot tell."""
    if isa_cap_without_bf16():
        return False
    try:
        caps = torch._C._cpu._get_cpu_capability()  # cpuinfo's flags, as a dict
    except (AttributeError, RuntimeError):
        return None
    if not isinstance(caps, dict) or "avx512_bf16" not in caps:
        return None
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def _cuda_reduced(device: torch.device, mode: str, why: str) -> Precision:
    if torch.cuda.is_bf16_supported():
        return Precision(mode, device.type, "bfloat16", f"{why}; this GPU supports bf16")
    return Precision(
        mode, device.type, "float16", f"{why}; no bf16 on this GPU, fp16 with a gradient scaler"
    )


def _time_calls(probe: Probe, budget_s: float) -> dict[str, float]:
    """Median ms per call of `probe` in float32 and in bf16 autocast, interleaved."""
    runs: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    contexts: dict[str, Callable[[], AbstractContextManager[Any]]] = {
        "float32": nullcontext,
        "bfloat16": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    }
    start = time.perf_counter()
    for name, samples in runs.items():
        # Warm-up: oneDNN builds its kernels on the first call of each shape. Kept as the
        # fallback figure when an emulated bf16 call alone eats the budget.
        t0 = time.perf_counter()
        probe(contexts[name]())
        samples.append(1000 * (time.perf_counter() - t0))
    if time.perf_counter() - start <= budget_s:
        for samples in runs.values():
            samples.clear()
    for _ in range(PROBE_ROUNDS):
        if time.perf_counter() - start > budget_s:
            break
        for name, samples in runs.items():
            t0 = time.perf_counter()
            probe(contexts[name]())
            samples.append(1000 * (time.perf_counter() - t0))
    return {name: statistics.median(samples) for name, samples in runs.items()}


def choose_precision(
    mode: str,
    device: torch.device,
    probe: Probe | None = None,
    *,
    native_bf16: bool | None = None,
    budget_s: float = PROBE_BUDGET_S,
) -> Precision:
    """Decide the precision for `mode` (auto | on | off) on `device`.

    `probe` is the caller's workload (one training step, or one batch of analysis), used by
    "auto" on a CPU with native bf16; without one, such a CPU stays on float32 (the safe
    choice). `native_bf16` overrides the flag check (tests; None: read the CPU's flags).
    """
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {mode!r}")
    if mode == "off":
        return Precision(mode, device.type, "float32", "amp off: float32 everywhere")
    if device.type == "cuda":
        return _cuda_reduced(device, mode, "CUDA" if mode == "auto" else "amp on")
    if device.type != "cpu":
        return Precision(mode, device.type, "float32", f"no autocast policy for {device.type}")
    if mode == "on":
        return Precision(mode, "cpu", "bfloat16", "amp on: bf16 autocast on the CPU")
    native = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    if native is False:
        cap = isa_cap_without_bf16()
        where = f"oneDNN is capped at {cap}" if cap else "this CPU has no AVX512-BF16 / AMX"
        return Precision(
            mode,
            "cpu",
            "float32",
            f"no native bf16 ({where}): bf16 autocast would be emulated, several times slower "
            "than float32",
        )
    if probe is None:
        return Precision(mode, "cpu", "float32", "bf16 speed not measured here: float32")
    ms = _time_calls(probe, budget_s)
    speedup = ms["float32"] / max(ms["bfloat16"], 1e-9)
    measured = f"measured {ms['float32']:.1f} ms float32 vs {ms['bfloat16']:.1f} ms bf16"
    if speedup >= MIN_SPEEDUP:
        return Precision(mode, "cpu", "bfloat16", f"{measured} ({speedup:.2f}× faster)", ms)
    return Precision(
        mode,
        "cpu",
        "float32",
        f"{measured}: bf16 not ≥ {MIN_SPEEDUP:.2f}× faster on this machine",
        ms,
    )
