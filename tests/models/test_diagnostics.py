"""Collapse diagnostics: measurements on embeddings whose answer is known, the verdict, the
report of real (tiny) checkpoints and the `protoscope diagnose` command."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.collapse_rules import early_note
from models.diagnostics import (
    DUPLICATE_COSINE,
    assignment_entropy,
    diagnose_checkpoint,
    diagnose_tensors,
    effective_rank,
    eigen_spectrum,
    embedding_health,
    embedding_std,
    phi_vs_size,
    prototype_redundancy,
    prototype_usage,
    verdict,
)
from models.evaluate import clustering_scores

CONTRACT_KEYS = {
    "verdict",
    "reason",
    "active_prototypes",
    "usage_entropy",
    "effective_rank",
    "embedding_std",
    "knn_top1",
    "num_prototypes",
    "ln_k",
    "usage",
    "eigen_spectrum",
    "max_prototype_cosine",
    "duplicate_pairs",
    "phi",
    "cluster_sizes",
    "nmi",
    "ami",
    "ari",
    "cluster_accuracy",
    "dataset",
    "split",
    "num_images",
    "method",
}
COLLAPSES = {"partial collapse", "uniform collapse", "one-cluster collapse", "dimensional collapse"}


def gaussian(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def clustered(
    n: int = 2000, k: int = 64, d: int = 32, noise: float = 0.05, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Points around k well-separated unit centres: (z, centres, cluster of each point)."""
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(k, d, generator=g), dim=1)
    member = torch.arange(n) % k
    z = F.normalize(centres[member] + noise * torch.randn(n, d, generator=g), dim=1)
    return z, centres, member


# --- measurements -------------------------------------------------------------------------------
def test_identical_vectors_are_one_point() -> None:
    z = gaussian(1, 32).repeat(500, 1)
    health = embedding_health(z)
    assert health.std == pytest.approx(0.0, abs=1e-9)
    assert health.effective_rank == pytest.approx(1.0, abs=1e-2)
    assert sum(health.eigen_spectrum) == pytest.approx(0.0, abs=1e-9)
    assert verdict(health)[0] == "one-cluster collapse"
    # With prototypes too: every image gets the same (peaked) prediction.
    protos = F.normalize(gaussian(16, 32, seed=1), dim=1)
    out = diagnose_tensors(z, F.normalize(z, dim=1) @ protos.t(), 0.1, protos)
    assert out["verdict"] == "one-cluster collapse"
    assert out["active_prototypes"] == 1
    assert out["usage_entropy"] == 0.0
    assert "0.0000" in out["reason"]  # names the std behind the verdict


def test_isotropic_gaussian_is_spread() -> None:
    d = 32
    z = gaussian(4000, d)
    assert embedding_std(z) == pytest.approx(1 / math.sqrt(d), rel=0.05)
    assert effective_rank(F.normalize(z, dim=1)) > 0.9 * d
    spectrum = eigen_spectrum(F.normalize(z, dim=1))
    assert len(spectrum) == d
    assert spectrum == sorted(spectrum, reverse=True)
    assert spectrum[0] < 2.0 / d and spectrum[-1] > 0.5 / d  # ≈ 1/d each
    word, reason = verdict(embedding_health(z))
    assert word == "healthy"
    assert "No prototypes" in reason


def test_uniform_predictions_are_uniform_collapse() -> None:
    k = 64
    logits = torch.zeros(500, k)
    ent = assignment_entropy(logits, temperature=0.1)
    assert ent.confidence == pytest.approx(math.log(k))
    assert ent.diversity == pytest.approx(math.log(k))
    assert ent.mutual_information == pytest.approx(0.0, abs=1e-9)
    out = diagnose_tensors(gaussian(500, 32), logits, 0.1)
    assert out["verdict"] == "uniform collapse"
    assert "ln K" in out["reason"]


def test_well_separated_clusters_are_healthy() -> None:
    z, centres, member = clustered()
    logits = z @ centres.t()
    out = diagnose_tensors(z, logits, 0.1, centres, labels=member % 10)
    assert out["verdict"] == "healthy", out["reason"]
    assert out["active_prototypes"] == 64
    assert out["usage_entropy"] > 0.99
    assert out["mutual_information"] > 0.8 * math.log(64)
    assert out["nmi"] > 0.5 and out["cluster_purity"] == pytest.approx(1.0)
    json.dumps(out)


def test_few_prototypes_used_is_partial_collapse() -> None:
    z, centres, member = clustered(k=128)
    # Every image sent to one of 5 prototypes (evenly): 123 of 128 dead.
    logits = torch.full((z.shape[0], 128), -1.0)
    logits[torch.arange(z.shape[0]), member % 5] = 1.0
    out = diagnose_tensors(z, logits, 0.1, centres)
    assert out["verdict"] == "partial collapse", out["reason"]
    assert out["active_prototypes"] == 5
    assert "5 of 128" in out["reason"]


def test_one_prototype_taking_almost_everything_is_one_cluster() -> None:
    z, centres, member = clustered(k=128)
    target = torch.where(member < 120, 0, member)  # 97 % on prototype 0, a few strays
    logits = torch.full((z.shape[0], 128), -1.0)
    logits[torch.arange(z.shape[0]), target] = 1.0
    usage = prototype_usage(logits)
    assert usage.active == 9 and usage.counts[0] > 0.9 * z.shape[0]
    out = diagnose_tensors(z, logits, 0.1, centres)
    assert out["verdict"] == "one-cluster collapse", out["reason"]


def test_few_directions_is_dimensional_collapse() -> None:
    z = torch.zeros(2000, 64)
    z[:, :3] = gaussian(2000, 3)  # spread, but within 3 of 64 dims
    health = embedding_health(z)
    assert health.std > 0.1 * health.expected_std
    assert health.effective_rank < 3.5
    assert verdict(health)[0] == "dimensional collapse"


def test_duplicate_prototypes_are_found() -> None:
    protos = F.normalize(gaussian(20, 64, seed=2), dim=1)
    protos[7] = 2 * protos[3]  # same direction, other length
    protos[12] = protos[3] + 1e-3 * gaussian(1, 64, seed=3)[0]
    red = prototype_redundancy(protos)
    assert red.max_cosine == pytest.approx(1.0, abs=1e-4)
    assert {(int(i), int(j)) for i, j, _ in red.duplicate_pairs} == {(3, 7), (3, 12), (7, 12)}
    assert red.num_duplicate_pairs == 3
    assert all(c > DUPLICATE_COSINE for *_, c in red.duplicate_pairs)
    clean = prototype_redundancy(F.normalize(gaussian(20, 64, seed=2), dim=1))
    assert clean.duplicate_pairs == [] and clean.max_cosine is not None and clean.max_cosine < 0.9
    assert prototype_redundancy(protos[:1]).max_cosine is None


def test_cluster_accuracy_after_hungarian_matching() -> None:
    labels = torch.randint(0, 10, (1000,), generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    scores = clustering_scores(perm[labels] + 100, labels)  # renamed, non-contiguous ids
    assert scores["cluster_accuracy"] == pytest.approx(1.0)
    assert scores["nmi"] == pytest.approx(1.0) and scores["ari"] == pytest.approx(1.0)
    # More clusters than classes: each class split in two. One-to-one matching leaves half
    # of the clusters unmatched, so accuracy drops while purity stays 1.
    halves = labels * 2 + (torch.arange(1000) % 2)
    split = clustering_scores(halves, labels)
    assert split["cluster_accuracy"] == pytest.approx(0.5, abs=0.05)
    assert split["cluster_purity"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in length"):
        clustering_scores([0, 1], [0])


def test_phi_against_cluster_size() -> None:
    phi = torch.tensor([0.4, 0.3, 0.2, 0.1, 0.05])
    assignments = torch.tensor([0] + [1] * 2 + [2] * 3 + [3] * 4 + [4] * 5)
    pairs = phi_vs_size(phi, assignments, train_sizes=torch.tensor([10, 20, 30, 40, 50]))
    assert pairs.num_clusters == 5
    assert pairs.cluster_sizes == [1, 2, 3, 4, 5]
    assert pairs.phi == pytest.approx(phi.tolist())
    assert pairs.spearman == pytest.approx(-1.0)  # bigger cluster, smaller φ here
    assert pairs.train_sizes == [10, 20, 30, 40, 50]
    flat = phi_vs_size(torch.full((5,), 0.2), assignments)  # the fixed-φ ablation
    assert flat.spearman is None and flat.train_sizes is None


# --- real checkpoints ---------------------------------------------------------------------------
def check_report(report: dict, method: str, n: int) -> None:
    assert report.keys() >= CONTRACT_KEYS
    json.loads(json.dumps(report, allow_nan=False))  # strictly JSON, no NaN
    assert report["method"] == method and report["num_images"] == n
    assert report["verdict"] in COLLAPSES | {"healthy"}
    assert report["reason"].endswith(".")
    assert 0.0 <= report["knn_top1"] <= 1.0
    assert 0.0 <= report["usage_entropy"] <= 1.0
    assert sum(report["usage"]) == n == report["num_images"]
    assert len(report["usage"]) == report["num_prototypes"]
    assert report["active_prototypes"] == sum(1 for c in report["usage"] if c > 0)
    assert report["ln_k"] == pytest.approx(math.log(report["num_prototypes"]))
    assert len(report["eigen_spectrum"]) == report["embedding_dim"]
    assert 1.0 <= report["effective_rank"] <= report["embedding_dim"]


def test_diagnose_swav_checkpoint(swav_checkpoint: Path) -> None:
    calls: list[tuple[float, str]] = []
    report = diagnose_checkpoint(
        swav_checkpoint, max_images=150, progress=lambda f, m: calls.append((f, m))
    )
    check_report(report, "swav", 150)
    assert report["num_prototypes"] == 10 and report["embedding_space"] == "projected"
    assert report["dataset"] == "shapes" and report["split"] == "test"
    assert report["phi"] is None and report["cluster_sizes"] is None
    assert report["num_recent_losses"] is None  # the tiny run ends before the ln K rule reads
    # Epochs are counted as people count them, as the file names and the checkpoint list do.
    assert report["epoch"] == 2  # last.pt of the 2-epoch tiny run
    first = diagnose_checkpoint(swav_checkpoint.parent / "epoch_0001.pt", max_images=50)
    assert first["epoch"] == 1
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)


def test_diagnose_pcl_checkpoint_on_the_train_split(pcl_checkpoint: Path) -> None:
    report = diagnose_checkpoint(pcl_checkpoint, dataset="shapes", split="train", max_images=100)
    check_report(report, "pcl", 100)
    assert report["split"] == "train"
    assert report["num_recent_losses"] is None  # no ln K line for PCL
    assert len(report["phi"]) == len(report["cluster_sizes"]) == report["num_prototypes"] == 8
    assert report["cluster_sizes"] == report["usage"]  # first clustering ↔ the logits' argmax
    assert [c["num_clusters"] for c in report["pcl_clusterings"]] == [8, 12]
    for c in report["pcl_clusterings"]:
        assert len(c["phi"]) == len(c["cluster_sizes"]) == c["num_clusters"]
        assert sum(c["cluster_sizes"]) == 100


def test_diagnose_refuses_bad_input(swav_checkpoint: Path, tmp_path: Path) -> None:
    from models.checkpoints import CheckpointError
    from models.data import DatasetError

    with pytest.raises(CheckpointError, match="no such file"):
        diagnose_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(DatasetError, match="unknown data set"):
        diagnose_checkpoint(swav_checkpoint, dataset="nope")
    with pytest.raises(ValueError, match="max_images"):
        diagnose_checkpoint(swav_checkpoint, max_images=0)


# --- command line -------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "protoscope", "diagnose", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_the_report_as_json(swav_checkpoint: Path) -> None:
    res = run_cli(str(swav_checkpoint), "--dataset", "shapes", "--max-images", "64")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report.keys() >= CONTRACT_KEYS and report["num_images"] == 64


def test_cli_pretty_summary(swav_checkpoint: Path) -> None:
    res = run_cli(str(swav_checkpoint), "--max-images", "64", "--pretty")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("verdict: ")
    assert "prototypes:" in res.stdout and "kNN top-1" in res.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["{missing}"], "no such file"),
        (["{ckpt}", "--dataset", "nope"], "unknown data set"),
        (["{ckpt}", "--max-images", "0"], "--max-images"),
        (["{ckpt}", "--split", "val"], "invalid choice"),
    ],
)
def test_cli_bad_input_exits_2(
    swav_checkpoint: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    filled = [a.format(missing=tmp_path / "missing.pt", ckpt=swav_checkpoint) for a in args]
    res = run_cli(*filled)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""


def test_an_early_uniform_verdict_says_that_runs_start_flat() -> None:
    note = early_note("uniform collapse", "protoscope", 1)
    assert "epoch 1" in note and "judge a later checkpoint" in note and note.endswith(".")
    assert early_note("uniform collapse", "protoscope", 2) != ""
    assert early_note("uniform collapse", "protoscope", 3) == ""  # late: a real collapse
    assert early_note("healthy", "protoscope", 1) == ""
    assert early_note("one-cluster collapse", "protoscope", 1) == ""
    assert early_note("uniform collapse", "swav_official", 1) == ""
    assert early_note("uniform collapse", "protoscope", None) == ""
