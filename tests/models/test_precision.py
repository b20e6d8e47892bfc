"""Precision chosen by the machine: amp auto | on | off, for training and for analysis."""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import torch

from models import precision
from models.config import TrainConfig
from models.precision import choose_precision
from models.swav import SwAV, sinkhorn
from models.train import Trainer
from tests.support import tiny_run_config

CPU = torch.device("cpu")


def _probe(bf16_ms: float, fp32_ms: float, calls: list[str] | None = None) -> precision.Probe:
    """A workload whose speed depends on the autocast it runs under, as on a real CPU."""

    def run(autocast: AbstractContextManager[Any]) -> None:
        with autocast:
            bf16 = torch.is_autocast_enabled("cpu")
        if calls is not None:
            calls.append("bf16" if bf16 else "fp32")
        time.sleep((bf16_ms if bf16 else fp32_ms) / 1000)

    return run


def test_off_is_float32_and_on_is_bf16_on_a_cpu() -> None:
    off = choose_precision("off", CPU)
    assert off.dtype == "float32" and not off.enabled and off.grad_scaler() is None
    on = choose_precision("on", CPU)
    assert on.dtype == "bfloat16" and on.enabled
    with on.autocast():
        assert torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="auto, on, off"):
        choose_precision("fast", CPU)


def test_auto_without_native_bf16_is_float32_and_never_measures() -> None:
    calls: list[str] = []
    p = choose_precision("auto", CPU, _probe(1, 1, calls), native_bf16=False)
    assert p.dtype == "float32"
    assert "no native bf16" in p.reason
    assert calls == []  # the flags decided: no time spent measuring


def test_auto_measures_where_bf16_is_native_and_takes_the_faster() -> None:
    fast = choose_precision("auto", CPU, _probe(bf16_ms=2, fp32_ms=10), native_bf16=True)
    assert fast.dtype == "bfloat16"
    assert fast.measured_ms["bfloat16"] < fast.measured_ms["float32"]
    assert "faster" in fast.reason
    # Emulated bf16 (9× slower, as on an AVX2-only CPU): float32, with the figures in the reason.
    slow = choose_precision("auto", CPU, _probe(bf16_ms=18, fp32_ms=2), native_bf16=True)
    assert slow.dtype == "float32"
    assert "ms bf16" in slow.reason
    # A near-tie is not worth bf16's precision.
    tie = choose_precision("auto", CPU, _probe(bf16_ms=9.5, fp32_ms=10), native_bf16=True)
    assert tie.dtype == "float32"


def test_the_measurement_stays_within_its_budget_even_when_bf16_is_very_slow() -> None:
    t0 = time.perf_counter()
    p = choose_precision("auto", CPU, _probe(bf16_ms=900, fp32_ms=50), native_bf16=True)
    elapsed = time.perf_counter() - t0
    assert p.dtype == "float32"
    # Warm-up of both (0.95 s) and at most one timed round beyond the 2 s budget.
    assert elapsed < precision.PROBE_BUDGET_S + 1.0, elapsed


def test_a_capped_onednn_isa_rules_out_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert precision.cpu_has_native_bf16() is False
    p = choose_precision("auto", CPU, _probe(1, 10))
    assert p.dtype == "float32" and "ONEDNN_MAX_CPU_ISA=AVX2" in p.reason
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert precision.isa_cap_without_bf16() is None


def test_old_configs_with_a_boolean_amp_still_load() -> None:
    assert TrainConfig.model_validate({"amp": True}).amp == "on"
    assert TrainConfig.model_validate({"amp": False}).amp == "off"
    assert TrainConfig().amp == "auto"


def test_swav_scores_and_codes_stay_float32_under_bf16_autocast() -> None:
    torch.manual_seed(0)
    cfg = tiny_run_config("swav")
    from models.backbones import build_backbone

    model = SwAV(build_backbone("small_cnn", 8), cfg.swav).eval()
    x = torch.randn(32, 3, 16, 16)
    with torch.no_grad():
        z32, s32 = model._head(model.backbone(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = model.backbone(x)
            z, scores = model._head(feats)
            out = model.analyse(x)
    assert feats.dtype == torch.bfloat16  # the backbone did run in bf16 ...
    assert z.dtype == scores.dtype == out.logits.dtype == torch.float32  # ... the scores did not
    # The scores are those of the float32 head on the same (bf16) backbone features.
    _, ref = model._head(feats.float())
    assert torch.equal(scores, ref)
    # Sinkhorn on float32 scores is bit-for-bit the float32 path's.
    assert torch.equal(sinkhorn(scores, 0.05), sinkhorn(ref, 0.05))
    assert s32.dtype == torch.float32 and z32.dtype == torch.float32


def test_a_run_records_its_precision_and_why(tmp_path: Path) -> None:
    events: list[dict] = []
    cfg = tiny_run_config("swav", amp="auto", max_steps=3)
    Trainer(cfg, tmp_path, emit=events.append, progress=False).run()
    start = next(e for e in events if e["type"] == "start")
    p = start["precision"]
    assert p["mode"] == "auto" and p["dtype"] in ("float32", "bfloat16")
    assert p["reason"]
    if precision.cpu_has_native_bf16() is False:  # this machine: the flags decide
        assert p["dtype"] == "float32"
    on_disk = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert on_disk[0]["precision"] == p


def test_measuring_changes_nothing_the_run_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe runs on a copy with the RNG forked: the same losses as a run that never measured.

    bf16 is made unwinnable so both runs train in float32 and only the measurement differs.
    """
    monkeypatch.setattr(precision, "MIN_SPEEDUP", 1e9)

    def losses(folder: Path, native: bool) -> list[float]:
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
        events: list[dict] = []
        cfg = tiny_run_config("swav", amp="auto", max_steps=4)
        Trainer(cfg, folder, emit=events.append, progress=False).run()
        start = next(e for e in events if e["type"] == "start")
        assert start["precision"]["dtype"] == "float32"
        assert bool(start["precision"]["measured_ms"]) == native
        return [e["loss"] for e in events if e["type"] == "step"]

    measured = losses(tmp_path / "a", native=True)
    assert len(measured) == 4
    assert measured == losses(tmp_path / "b", native=False)


def test_the_cli_says_which_precision_it_chose_and_why(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.support import tiny_run_config as tiny

    config = tmp_path / "tiny.json"
    config.write_text(tiny("swav").model_dump_json(exclude={"amp"}))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "protoscope",
            "train",
            "--config",
            str(config),
            "--amp",
            "auto",
            "--max-steps",
            "2",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stderr.splitlines() if "precision" in x)
    assert "(amp auto):" in line and line.split(":", 2)[2].strip()  # a reason follows
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["precision"] in ("float32", "bfloat16")
    bad = subprocess.run(
        [sys.executable, "-m", "protoscope", "train", "--amp", "fast"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--amp" in bad.stderr


def test_pcl_estep_features_are_float32_without_autocast_even_with_amp_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the official code: k-means and φ see float32 features, whatever the training runs in."""
    from models.pcl import PCL

    seen: list[tuple[torch.dtype, bool]] = []
    real = PCL._estep

    def spy(self: PCL, feats: torch.Tensor) -> Any:
        seen.append((feats.dtype, torch.is_autocast_enabled("cpu")))
        return real(self, feats)

    monkeypatch.setattr(PCL, "_estep", spy)
    inside: list[bool] = []
    real_forward = torch.nn.Module.__call__

    cfg = tiny_run_config("pcl", amp="on", max_steps=12)
    trainer = Trainer(cfg, tmp_path, emit=lambda e: None, progress=False)

    def watch(module: torch.nn.Module, *a: Any, **k: Any) -> Any:
        if module is getattr(getattr(trainer, "model", None), "encoder_k", None):
            inside.append(torch.is_autocast_enabled("cpu"))
        return real_forward(module, *a, **k)

    monkeypatch.setattr(torch.nn.Module, "__call__", watch)
    trainer.run()
    assert seen, "no E-step ran"
    assert all(dtype == torch.float32 for dtype, _ in seen)
    # The key encoder ran under bf16 autocast for the keys of training steps, never for the
    # E-step's features: both kinds of call were seen.
    assert True in inside and False in inside
