"""A run's checkpoints on one time line: aligned maps, prototype usage, cluster flow, verdicts.

alignment          the Procrustes chain that puts every epoch's map in the first one's frame
cluster_flow       who went where between consecutive epochs (links, splits, merges, relabels)
usage_over_epochs  prototype usage per epoch and which prototypes were born or died
epoch_frame        one checkpoint's contribution, computed once and cached on disk
of_run             `run_timeline`: the entry point the backend calls
"""

from models.timeline.alignment import procrustes_chain
from models.timeline.cluster_flow import epoch_flow, flow_links, relabel_chain
from models.timeline.of_run import TimelineCheckpoint, run_timeline
from models.timeline.usage_over_epochs import births_and_deaths, usage_matrix

__all__ = [
    "TimelineCheckpoint",
    "births_and_deaths",
    "epoch_flow",
    "flow_links",
    "procrustes_chain",
    "relabel_chain",
    "run_timeline",
    "usage_matrix",
]
