"""What each number of a diagnostic report says about *this* checkpoint, in one sentence.

The Diagnose page used to print fixed hints beside each number ("one-cluster collapse: ≈ 0"),
and on the collapse demo they contradicted the numbers they sat next to: a one-cluster run
whose softmax is flat has H(mean p) ≈ ln K, not 0, and a collapsed run's loss sits *below*
ln K. Here each reading is computed from the value with the verdict's own thresholds
(models/collapse_rules.py), so a card can only say what its number shows.

A reading is {"tone": "good" | "bad" | "neutral", "text": ...}: "bad" when the value is in
the range the verdict treats as collapse, "good" when it is in the healthy range, "neutral"
when the number alone cannot tell (it is then read with the others).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from models import collapse_rules as d

Reading = dict[str, str]
Report = Mapping[str, Any]


def _r(tone: str, text: str) -> Reading:
    return {"tone": tone, "text": text}


def _num(r: Report, key: str) -> float | None:
    v = r.get(key)
    return float(v) if isinstance(v, int | float) and math.isfinite(float(v)) else None


def _active(v: float, r: Report) -> Reading:
    k = int(r.get("num_prototypes") or 0)
    possible = max(1, min(k, int(r.get("num_images") or k)))
    one = d.one_cluster_max_active(k, int(r.get("num_images") or k))
    n = int(v)
    if n <= one:
        return _r("bad", f"Only {n} of {k} prototypes receive any image: one cluster.")
    if n / possible < d.PARTIAL_MIN_ACTIVE_FRACTION:
        return _r(
            "bad",
            f"{n} of {k} prototypes receive images, under "
            f"{d.PARTIAL_MIN_ACTIVE_FRACTION:.0%}: most are dead (partial collapse).",
        )
    return _r("good", f"{n} of {k} prototypes receive images.")


def _usage_entropy(v: float, r: Report) -> Reading:
    if v < d.PARTIAL_MIN_USAGE_ENTROPY:
        return _r(
            "bad",
            f"{v:.2f} < {d.PARTIAL_MIN_USAGE_ENTROPY}: the images crowd onto a few prototypes.",
        )
    return _r("good", f"{v:.2f} ≥ {d.PARTIAL_MIN_USAGE_ENTROPY}: the images spread widely.")


def _effective(v: float, r: Report) -> Reading:
    if v < d.ONE_CLUSTER_MAX_EFFECTIVE_CLUSTERS:
        return _r("bad", f"{v:.1f}: in effect a single cluster.")
    k = int(r.get("num_prototypes") or 0)
    if k > 1 and v < math.sqrt(k):
        return _r("bad", f"{v:.1f} < √K = {math.sqrt(k):.1f}: a few clusters take most images.")
    return _r("good", f"{v:.1f} equally used prototypes would spread images this evenly.")


def _confidence(v: float, r: Report) -> Reading:
    ln_k = _num(r, "ln_k") or 0.0
    if ln_k > 0 and v >= d.UNIFORM_MIN_CONFIDENCE * ln_k:
        return _r(
            "bad",
            f"{v:.3f} ≈ ln K = {ln_k:.3f}: each prediction is flat, the signature of uniform "
            "collapse (and of every run's first steps).",
        )
    return _r("good", f"{v:.3f} < ln K = {ln_k:.3f}: predictions pick prototypes.")


def _diversity(v: float, r: Report) -> Reading:
    ln_k = _num(r, "ln_k") or 0.0
    if ln_k > 0 and v < d.ONE_CLUSTER_MAX_DIVERSITY * ln_k:
        return _r("bad", f"{v:.3f} ≈ 0: every image gets the same confident prediction.")
    conf = _num(r, "assignment_entropy")
    if conf is not None and ln_k > 0 and conf >= d.UNIFORM_MIN_CONFIDENCE * ln_k:
        return _r(
            "neutral",
            f"{v:.3f}, near ln K = {ln_k:.3f}, but only because each prediction is flat: "
            "a flat softmax averages to a spread one even when every argmax is the same "
            "prototype. Read it with the active prototypes.",
        )
    mi = _num(r, "mutual_information")
    if mi is not None and ln_k > 0 and mi <= d.UNIFORM_MAX_MI * ln_k:
        return _r(
            "neutral",
            f"{v:.3f}, but the images all get about the same prediction (mutual information only "
            f"{mi:.3f} nats): this is the spread of one shared prediction, not of the images.",
        )
    return _r("good", f"{v:.3f} of ln K = {ln_k:.3f}: the predictions differ across images.")


def _mutual(v: float, r: Report) -> Reading:
    ln_k = _num(r, "ln_k") or 0.0
    if ln_k > 0 and v <= d.UNIFORM_MAX_MI * ln_k:
        return _r("bad", f"{v:.3f} ≈ 0 nats: a prediction says nothing about its image.")
    return _r("good", f"{v:.3f} nats: predictions tell images apart.")


def _std(v: float, r: Report) -> Reading:
    expected = _num(r, "expected_std") or 0.0
    ratio = v / expected if expected > 0 else 0.0
    if ratio < d.COLLAPSED_STD_RATIO:
        return _r("bad", f"{v:.4f}, {ratio:.2f} × 1/√d = {expected:.4f}: shrunk to a point.")
    return _r("good", f"{v:.4f}, {ratio:.2f} × 1/√d = {expected:.4f}: the embeddings spread.")


def _rank(v: float, r: Report) -> Reading:
    dim = int(r.get("embedding_dim") or 0)
    floor = max(d.DIMENSIONAL_MIN_RANK, d.DIMENSIONAL_MAX_RANK_FRACTION * dim)
    if v < floor:
        return _r("bad", f"{v:.1f} < {floor:.1f} of d = {dim}: a handful of directions.")
    return _r("good", f"{v:.1f} of d = {dim} directions in use.")


def _max_cosine(v: float, r: Report) -> Reading:
    pairs = int(r.get("num_duplicate_pairs") or 0)
    if v > d.DUPLICATE_COSINE:
        return _r("bad", f"{v:.3f} > {d.DUPLICATE_COSINE}: {pairs} pair(s) are duplicates.")
    return _r("good", f"{v:.3f} ≤ {d.DUPLICATE_COSINE}: no two prototypes coincide.")


def _loss_gap(v: float, r: Report) -> Reading:
    ln_k = _num(r, "ln_k") or 0.0
    tol = d.LN_K_TOLERANCE * ln_k
    n = int(r.get("num_recent_losses") or 0)
    if r.get("loss_on_ln_k_line"):
        return _r(
            "bad",
            f"{v:+.3f}: each of the last {n} losses within ±{tol:.3f} of ln K, the loss of "
            "flat predictions.",
        )
    if abs(v) <= tol:
        return _r(
            "neutral",
            f"{v:+.3f}: on average within ±{tol:.3f} of ln K, but not every one of the last {n} "
            "losses: the loss is leaving (or nearing) the line of flat predictions.",
        )
    if v < 0:
        return _r(
            "neutral",
            f"{v:+.3f}: below ln K, so the predictions are sharp. A lower loss is not learning "
            "on its own: a collapsed run that predicts one prototype confidently scores low "
            "too. Read it with the active prototypes and kNN.",
        )
    return _r("bad", f"{v:+.3f}: above ln K, worse than flat predictions.")


def _chance(r: Report) -> float | None:
    c = r.get("num_classes")
    return 1.0 / c if isinstance(c, int) and c > 1 else None


def _knn(v: float, r: Report) -> Reading:
    chance = _chance(r)
    if chance is None:
        return _r("neutral", f"{100 * v:.1f} %.")
    if v < 2 * chance:
        return _r(
            "bad", f"{100 * v:.1f} %, under twice chance ({100 * chance:.0f} %): near chance."
        )
    return _r("good", f"{100 * v:.1f} %, {v / chance:.1f}× chance ({100 * chance:.0f} %).")


def _agreement(name: str) -> Callable[[float, Report], Reading]:
    def read(v: float, r: Report) -> Reading:
        if v < 0.05:
            return _r("bad", f"{v:.3f} ≈ 0: the clusters ignore the classes.")
        return _r("good", f"{v:.3f}: the clusters follow the classes in part.")

    read.__name__ = f"_{name}"
    return read


def _cluster_accuracy(v: float, r: Report) -> Reading:
    chance = _chance(r)
    if chance is not None and v < 1.5 * chance:
        return _r("bad", f"{100 * v:.1f} %: about one class's share ({100 * chance:.0f} %).")
    return _r("good", f"{100 * v:.1f} % after matching clusters to classes.")


READERS: dict[str, Callable[[float, Report], Reading]] = {
    "active_prototypes": _active,
    "usage_entropy": _usage_entropy,
    "effective_clusters": _effective,
    "assignment_entropy": _confidence,
    "mean_prediction_entropy": _diversity,
    "mutual_information": _mutual,
    "embedding_std": _std,
    "effective_rank": _rank,
    "max_prototype_cosine": _max_cosine,
    "loss_gap_to_ln_k": _loss_gap,
    "knn_top1": _knn,
    "nmi": _agreement("nmi"),
    "ami": _agreement("ami"),
    "ari": _agreement("ari"),
    "cluster_accuracy": _cluster_accuracy,
}


def readings(report: Report) -> dict[str, Reading]:
    """A reading for every metric of `report` that has a finite value."""
    out: dict[str, Reading] = {}
    for key, read in READERS.items():
        v = _num(report, key)
        if v is not None:
            out[key] = read(v, report)
    return out
