"""The collapse rules (models/collapse_rules.py): the live alert and the verdict read the same
step events with the same rules, and the backend serves the alert with each metrics page."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from models import collapse_rules as rules
from models.collapse_rules import training_log_alert
from models.diagnostics import diagnose_tensors


def steps(
    n: int, k: int = 10, loss: float = 1.0, active: int | None = 8, first: int = 1
) -> list[dict[str, Any]]:
    return [
        {"type": "step", "step": s, "loss": loss, "num_prototypes": k}
        | ({"active_prototypes": active} if active is not None else {})
        for s in range(first, first + n)
    ]


def healthy_embedding(k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around k separated unit centres, and the centres as prototypes."""
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(k, 32, generator=g), dim=1)
    z = F.normalize(centres[torch.arange(1000) % k] + 0.05 * torch.randn(1000, 32, generator=g))
    return z, centres


def test_one_cluster_alert_needs_a_window_of_batches() -> None:
    healthy = steps(10, active=8)
    assert training_log_alert(healthy) is None
    collapsed = healthy + steps(rules.ACTIVE_WINDOW, active=1, first=11)
    alert = training_log_alert(collapsed)
    assert (
        alert is not None and alert.kind == "one-cluster" and "1 prototype of 10" in alert.message
    )
    assert training_log_alert([*healthy, *steps(1, active=1, first=11)]) is None  # one odd batch
    # With K ≤ 2 every batch uses ≤ 2 prototypes: the rule means nothing there.
    assert training_log_alert(steps(5, k=2, active=1)) is None


def test_ln_k_alert_only_after_the_warm_up_and_for_swav() -> None:
    k = 10
    flat = steps(rules.LN_K_MIN_STEP + rules.LN_K_WINDOW, k=k, loss=math.log(k) * 1.01)
    alert = training_log_alert(flat, "swav")
    assert alert is not None and alert.kind == "uniform" and "2.303" in alert.message
    assert training_log_alert(flat[: rules.LN_K_MIN_STEP], "swav") is None  # the start sits there
    assert training_log_alert([dict(e, loss=1.0) for e in flat], "swav") is None
    assert training_log_alert(flat, "pcl") is None  # ln K is SwAV's reference
    # One loss off the line in the window is enough to keep the alert down.
    bumped = [*flat[:-1], dict(flat[-1], loss=math.log(k) * 0.9)]
    assert training_log_alert(bumped, "swav") is None
    # K from the configuration when the events do not name it.
    bare = [{k2: v for k2, v in e.items() if k2 != "num_prototypes"} for e in flat]
    assert training_log_alert(bare, "swav") is None
    assert training_log_alert(bare, "swav", num_prototypes=k) is not None


def test_the_alert_and_the_verdict_give_the_same_answer_on_the_same_events() -> None:
    """The very events the Runs page's alert reads decide the verdict of a checkpoint whose
    measurements look healthy, with the same words."""
    k = 10
    z, centres = healthy_embedding(k)
    logits = z @ centres.t()
    cases = {
        "uniform": steps(rules.LN_K_MIN_STEP + rules.LN_K_WINDOW, k=k, loss=math.log(k)),
        "one-cluster": steps(rules.ACTIVE_WINDOW + 5, k=k, loss=1.0, active=1),
        None: steps(rules.LN_K_MIN_STEP + rules.LN_K_WINDOW, k=k, loss=1.0, active=8),
    }
    words = {"uniform": "uniform collapse", "one-cluster": "one-cluster collapse", None: "healthy"}
    for kind, events in cases.items():
        alert = training_log_alert(events, "swav")
        report = diagnose_tensors(z, logits, 0.1, centres, recent_steps=events, method="swav")
        assert (alert.kind if alert else None) == kind
        assert report["verdict"] == words[kind], (kind, report["reason"])
        if alert is not None:
            assert alert.message in report["reason"]
    # Without the training log the same measurements read healthy: the log decided.
    assert diagnose_tensors(z, logits, 0.1, centres)["verdict"] == "healthy"


def test_the_loss_fields_report_the_rule_s_own_window() -> None:
    k = 128
    z, centres = healthy_embedding(16)
    logits = torch.cat([z @ centres.t(), torch.full((1000, k - 16), -5.0)], dim=1)
    on = steps(100, k=k, loss=math.log(k) + 0.01)
    out = diagnose_tensors(z, logits, 0.1, None, recent_steps=on, method="swav")
    assert out["loss_on_ln_k_line"] is True and out["num_recent_losses"] == rules.LN_K_WINDOW
    assert out["verdict"] == "uniform collapse"
    off = diagnose_tensors(z, logits, 0.1, None, recent_steps=steps(100, k=k, loss=2.4))
    assert off["loss_on_ln_k_line"] is False and off["loss_gap_to_ln_k"] < -2
    pcl = diagnose_tensors(z, logits, 0.1, None, recent_steps=on, method="pcl")
    assert pcl.get("num_recent_losses") is None  # PCL's loss has no ln K line
