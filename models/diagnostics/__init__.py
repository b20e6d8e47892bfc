"""Collapse diagnostics: one report per checkpoint × data set split.

The measurements are plain functions over tensors (embeddings z, prototype logits, prototypes,
recent losses) so each can be tested on inputs whose answer is known; `verdict` turns them into
one word and one sentence; `diagnose_checkpoint` is the single entry point the CLI and the
backend call. Usage is always measured on the model's *predictions* (argmax of the logits) —
never on Sinkhorn codes, which are balanced by construction and would hide every collapse.
"""

from models.collapse_rules import Verdict, verdict
from models.diagnostics.measures import (
    DUPLICATE_COSINE,
    AssignmentEntropy,
    EmbeddingHealth,
    LossPlateau,
    PhiVsSize,
    PrototypeRedundancy,
    PrototypeUsage,
    assignment_entropy,
    cluster_assignments,
    effective_rank,
    eigen_spectrum,
    embedding_health,
    embedding_std,
    loss_plateau,
    phi_vs_size,
    prototype_redundancy,
    prototype_usage,
)
from models.diagnostics.of_checkpoint import diagnose_checkpoint
from models.diagnostics.report import DiagnosticReport, diagnose_tensors

__all__ = [
    "DUPLICATE_COSINE",
    "AssignmentEntropy",
    "DiagnosticReport",
    "EmbeddingHealth",
    "LossPlateau",
    "PhiVsSize",
    "PrototypeRedundancy",
    "PrototypeUsage",
    "Verdict",
    "assignment_entropy",
    "cluster_assignments",
    "diagnose_checkpoint",
    "diagnose_tensors",
    "effective_rank",
    "eigen_spectrum",
    "embedding_health",
    "embedding_std",
    "loss_plateau",
    "phi_vs_size",
    "prototype_redundancy",
    "prototype_usage",
    "verdict",
]
