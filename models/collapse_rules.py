"""Every rule that calls a run collapsed, in one place, with the thresholds it uses.

Two readers, one set of rules:
- the **live alert** of the Runs page: `training_log_alert` judges a run's latest step events
  (loss, prototypes active in the batch). The backend calls it on the events it stores and
  serves the answer with each metrics page; the page only shows it.
- the **verdict** of a checkpoint (`verdict`): the measurements on evaluated images
  (models/diagnostics.py) and then the very same training-log rules on the step events the
  checkpoint records, so the page and Diagnose cannot contradict each other on the same steps.

Pure Python over plain numbers and dicts: the backend imports it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the measurement types; the rules only read their fields
    from models.diagnostics import AssignmentEntropy, EmbeddingHealth, PrototypeUsage

Verdict = Literal[
    "healthy",
    "partial collapse",
    "uniform collapse",
    "one-cluster collapse",
    "dimensional collapse",
]

# --- the training log: what the step events show --------------------------------------------
# One-cluster collapse: the argmax of (almost) every image of a batch lands on at most this
# many prototypes (the equipartition=False ablation ends with 1–3 active of 128, a trained
# model uses tens). The same bound judges the evaluated images (ONE_CLUSTER_MAX_ACTIVE).
ONE_CLUSTER_MAX_ACTIVE = 2
# ... and it must hold for this many consecutive logged steps, so one odd batch does not alarm.
ACTIVE_WINDOW = 3
# Uniform collapse: the swapped-prediction loss against flat predictions is exactly ln K; every
# one of the last LN_K_WINDOW logged losses within this fraction of ln K means the predictions
# stopped carrying information. A trained default run on `shapes` ends near 2.4 for
# ln 128 = 4.85, far outside ±2 %.
LN_K_TOLERANCE = 0.02
LN_K_WINDOW = 20
# The first steps of every SwAV run sit near ln K (random prototypes, frozen at first), so the
# ln K rule only reads steps after this one.
LN_K_MIN_STEP = 50
# What a checkpoint records of its training log: enough for both windows, and the fields the
# rules read.
RECENT_STEPS = max(LN_K_WINDOW, ACTIVE_WINDOW)
STEP_FIELDS = ("step", "epoch", "loss", "active_prototypes", "num_prototypes")

# --- the evaluated images: what the measurements show -----------------------------------------
# Embeddings whose per-dim std is below this fraction of 1/√d have shrunk to (nearly) one point:
# SimSiam (§4.1) shows ≈ 0 for a collapsed and ≈ 1/√d for a healthy L2-normalised embedding, and
# a tenth of 1/√d is far below anything a working encoder produces.
COLLAPSED_STD_RATIO = 0.1
# exp(usage entropy) below this: one prototype takes almost every image even when a few others
# catch a handful (e.g. 97 % / 2 % / 1 % gives 1.17 effective clusters).
ONE_CLUSTER_MAX_EFFECTIVE_CLUSTERS = 1.5
# H(mean p) / ln K below this: the *average* prediction is itself nearly one-hot, i.e. every
# image is sent to the same prototype (one-cluster collapse is H(mean p) → 0).
ONE_CLUSTER_MAX_DIVERSITY = 0.1
# Mean per-sample entropy at or above this fraction of ln K means flat predictions (uniform
# collapse is mean H(p_i) → ln K); 0.95 leaves room for noise.
UNIFORM_MIN_CONFIDENCE = 0.95
# …and mutual information H(mean p) − mean H(p_i) at most this fraction of ln K: the predictions
# say nothing about which image they came from.
UNIFORM_MAX_MI = 0.05
# A checkpoint this many epochs old or younger that reads "uniform collapse" gets a note: runs
# start flat (seen on shapes: flat at epoch 1, healthy at epoch 2 with the default SwAV).
EARLY_EPOCHS = 2
# RankMe below max(DIMENSIONAL_MIN_RANK, DIMENSIONAL_MAX_RANK_FRACTION · d) while the std is
# not ≈ 0: the embeddings spread, but along a handful of directions only (Jing et al. 2021).
# Measured on `shapes` (d = 64): default SwAV after 5 min 17.9; default PCL after 5 min 7.2 (its
# covariance has ~6 non-negligible eigenvalues), after 2 min 4.7 (3 of them) — read as
# dimensional collapse, which the spectrum bears out.
DIMENSIONAL_MAX_RANK_FRACTION = 0.1
DIMENSIONAL_MIN_RANK = 2.0
# Usage entropy below half of ln K means fewer than √K effective clusters (11 of K = 128): a
# scale-free line between "over-clusters as SwAV should" and "most prototypes are dead".
PARTIAL_MIN_USAGE_ENTROPY = 0.5
# Fewer than this fraction of the prototypes (of min(K, N)) receiving any image is partial
# collapse too. Deliberately lower than "half": K = 128 on a 10-class set legitimately leaves
# many prototypes idle, and a trained run using tens of them must read healthy. Measured on the
# 2000 test images of `shapes`: default SwAV (5 min) 122 of 128 active, usage entropy 0.91.
PARTIAL_MIN_ACTIVE_FRACTION = 0.15
# Prototypes this close are one prototype twice (SwAV issue #71).
DUPLICATE_COSINE = 0.99


# --- the training-log rules -------------------------------------------------------------------
@dataclass(frozen=True)
class CollapseAlert:
    """Why the training log says the run collapsed, in words that name the numbers."""

    kind: Literal["one-cluster", "uniform"]
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


def _losses(steps: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [s for s in steps if isinstance(s.get("loss"), int | float)]


def ln_k_window(steps: Sequence[Mapping[str, Any]]) -> list[float]:
    """The losses the ln K rule reads: the last LN_K_WINDOW logged after LN_K_MIN_STEP."""
    late = [s for s in _losses(steps) if (s.get("step") or 0) > LN_K_MIN_STEP]
    return [float(s["loss"]) for s in late[-LN_K_WINDOW:]]


def on_ln_k_line(losses: Sequence[float], num_prototypes: int) -> bool:
    """True when a full window of losses all lie within LN_K_TOLERANCE · ln K of ln K."""
    if num_prototypes < 2 or len(losses) < LN_K_WINDOW:
        return False
    ln_k = math.log(num_prototypes)
    return all(
        math.isfinite(x) and abs(x - ln_k) <= LN_K_TOLERANCE * ln_k for x in losses[-LN_K_WINDOW:]
    )


def configured_num_prototypes(config: Mapping[str, Any]) -> int | None:
    """K of a SwAV run's configuration (a dumped TrainConfig); None for the other methods."""
    if config.get("method") != "swav":
        return None
    k = (config.get("swav") or {}).get("num_prototypes")
    return k if isinstance(k, int) else None


def _named_num_prototypes(steps: Sequence[Mapping[str, Any]]) -> int | None:
    """K from the latest step event that names it."""
    for s in reversed(steps):
        k = s.get("num_prototypes")
        if isinstance(k, int) and not isinstance(k, bool):
            return k
    return None


def training_log_alert(
    steps: Sequence[Mapping[str, Any]],
    method: str | None = None,
    num_prototypes: int | None = None,
) -> CollapseAlert | None:
    """The collapse the latest step events show, or None while they look healthy.

    `steps` are step events oldest first (dicts with step, loss, active_prototypes and
    num_prototypes, as models/train.py emits them); `num_prototypes` is K when the events do not
    say. The ln K rule is SwAV's alone: PCL's InfoNCE + ProtoNCE has no ln K line.
    """
    logged = _losses(steps)
    k = _named_num_prototypes(logged) or num_prototypes
    active = [s for s in logged if isinstance(s.get("active_prototypes"), int)]
    if len(active) >= ACTIVE_WINDOW:
        last = active[-ACTIVE_WINDOW:]
        # With K ≤ 2 every batch trivially uses ≤ 2 prototypes; the rule means nothing there.
        if (k is None or k > ONE_CLUSTER_MAX_ACTIVE) and all(
            s["active_prototypes"] <= ONE_CLUSTER_MAX_ACTIVE for s in last
        ):
            n = last[-1]["active_prototypes"]
            return CollapseAlert(
                "one-cluster",
                f"One-cluster collapse: only {n} {'prototype' if n == 1 else 'prototypes'} of "
                f"{k or '?'} received any image in each of the last {ACTIVE_WINDOW} logged "
                f"steps (step {last[-1].get('step')}).",
            )
    if method in (None, "swav") and k and k > 1:
        window = ln_k_window(logged)
        if on_ln_k_line(window, k):
            ln_k = math.log(k)
            return CollapseAlert(
                "uniform",
                f"Uniform collapse: the loss has stayed within {100 * LN_K_TOLERANCE:.0f} % of "
                f"ln K = {ln_k:.3f} for the last {LN_K_WINDOW} logged steps (now "
                f"{window[-1]:.3f}): the predictions are flat and carry no information.",
            )
    return None


# --- the verdict ------------------------------------------------------------------------------
def verdict(
    embedding: EmbeddingHealth,
    usage: PrototypeUsage | None = None,
    assignment: AssignmentEntropy | None = None,
    training_log: CollapseAlert | None = None,
) -> tuple[Verdict, str]:
    """One word and one sentence naming the numbers behind it.

    Checked in order, the first that applies wins: flat predictions (uniform), embeddings
    shrunk to a point (one-cluster), one prototype taking everything (one-cluster), the training
    log's alert (`training_log_alert` on the steps that led to the checkpoint), few embedding
    directions (dimensional), many dead prototypes (partial), else healthy. Flat predictions
    come first because that is the definition of uniform collapse (mean H(p_i) → ln K) and their
    argmax lands on whichever prototype is marginally ahead, which mimics one cluster; the
    equipartition=False ablation shows both (a point embedding whose predictions are flat), and
    the reason names the std too. Without prototypes (`usage` None) only the embedding is judged.
    """
    ratio = embedding.std / embedding.expected_std
    std_text = f"embedding std {embedding.std:.4f} vs 1/√d = {embedding.expected_std:.4f}"
    if assignment is not None and assignment.ln_k > 0:
        conf, mi = assignment.confidence / assignment.ln_k, assignment.mutual_information
        if conf >= UNIFORM_MIN_CONFIDENCE and mi <= UNIFORM_MAX_MI * assignment.ln_k:
            return "uniform collapse", (
                f"Predictions are flat: mean per-sample entropy {assignment.confidence:.3f} nats "
                f"= {conf:.3f}·ln K (ln K = {assignment.ln_k:.3f}) with mutual information "
                f"{mi:.3f} nats ({std_text})."
            )
    if ratio < COLLAPSED_STD_RATIO:
        return "one-cluster collapse", (
            f"The embeddings have shrunk to a point: {std_text} "
            f"(ratio {ratio:.3f} < {COLLAPSED_STD_RATIO})."
        )
    if usage is not None and usage.num_prototypes > 1:
        reason = _one_cluster_reason(usage, assignment)
        if reason:
            return "one-cluster collapse", reason
    if training_log is not None:
        word: Verdict = (
            "uniform collapse" if training_log.kind == "uniform" else "one-cluster collapse"
        )
        return word, f"In training: {training_log.message}"
    rank_floor = max(DIMENSIONAL_MIN_RANK, DIMENSIONAL_MAX_RANK_FRACTION * embedding.dim)
    if embedding.effective_rank < rank_floor:
        return "dimensional collapse", (
            f"Effective rank {embedding.effective_rank:.2f} of d = {embedding.dim} is below "
            f"{rank_floor:.1f} while the {std_text} is not collapsed."
        )
    if usage is not None and usage.num_prototypes > 1:
        possible = min(usage.num_prototypes, usage.num_images)
        used = usage.active / max(possible, 1)
        if usage.entropy_norm < PARTIAL_MIN_USAGE_ENTROPY or used < PARTIAL_MIN_ACTIVE_FRACTION:
            return "partial collapse", (
                f"Only {usage.active} of {usage.num_prototypes} prototypes are used "
                f"({usage.effective_clusters:.1f} effective clusters, usage entropy "
                f"{usage.entropy_norm:.2f}·ln K; healthy needs ≥ {PARTIAL_MIN_USAGE_ENTROPY} and "
                f"≥ {PARTIAL_MIN_ACTIVE_FRACTION:.0%} active)."
            )
    return "healthy", _healthy_reason(embedding, usage, std_text)


def one_cluster_max_active(num_prototypes: int, num_images: int) -> int:
    """How many active prototypes still read as one cluster on `num_images` evaluated images:
    with only a few prototypes (or images) two active ones can be a genuine split."""
    return max(1, min(ONE_CLUSTER_MAX_ACTIVE, min(num_prototypes, num_images) // 4))


def _one_cluster_reason(usage: PrototypeUsage, assignment: AssignmentEntropy | None) -> str:
    """The one-cluster sentence, or "" when usage does not look like one cluster."""
    diversity = (
        assignment.diversity / assignment.ln_k
        if assignment is not None and assignment.ln_k > 0
        else None
    )
    if (
        usage.active <= one_cluster_max_active(usage.num_prototypes, usage.num_images)
        or usage.effective_clusters < ONE_CLUSTER_MAX_EFFECTIVE_CLUSTERS
        or (diversity is not None and diversity < ONE_CLUSTER_MAX_DIVERSITY)
    ):
        div_text = f", H(mean p) = {diversity:.3f}·ln K" if diversity is not None else ""
        return (
            f"{usage.active} of {usage.num_prototypes} prototypes receive any image "
            f"({usage.effective_clusters:.2f} effective clusters, usage entropy "
            f"{usage.entropy_norm:.3f}·ln K{div_text})."
        )
    return ""


def _healthy_reason(embedding: EmbeddingHealth, usage: PrototypeUsage | None, std_text: str) -> str:
    rank_text = f"effective rank {embedding.effective_rank:.1f} of d = {embedding.dim}"
    if usage is None:
        return f"No prototypes to judge; the embedding is spread: {std_text}, {rank_text}."
    return (
        f"{usage.active} of {usage.num_prototypes} prototypes used "
        f"({usage.effective_clusters:.1f} effective clusters, usage entropy "
        f"{usage.entropy_norm:.2f}·ln K), {rank_text}, {std_text}."
    )


def early_note(word: str, source: str, epochs_done: int | None) -> str:
    """A sentence to add to an early checkpoint's "uniform collapse" reason, else ""."""
    # Every SwAV run starts on the ln K line (random prototypes, frozen for the first
    # iterations): this early, flat predictions do not yet tell a collapsed run from a healthy
    # one, and a teacher comparing epoch 1 with epoch 30 should hear that.
    if word != "uniform collapse" or source != "protoscope" or epochs_done is None:
        return ""
    if epochs_done > EARLY_EPOCHS:
        return ""
    return (
        f" This checkpoint is from epoch {epochs_done}: every run starts with flat predictions "
        "and a healthy one leaves the ln K line within a few epochs, so judge a later "
        "checkpoint before calling the run collapsed."
    )
