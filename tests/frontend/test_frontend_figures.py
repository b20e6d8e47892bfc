"""Frontend pure parts: figures from hand-made events, collapse rules, the Learn page's numpy."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from frontend import figures, learn_demos, run_events, run_form
from frontend.client import BackendError, BackendUnavailable, Client, _detail_text
from frontend.map_columns import MapColumns, columns_of


def _steps(n: int, k: int = 4, loss: float = 1.0, active: int = 4) -> list[dict[str, Any]]:
    return [
        {
            "type": "step",
            "step": s + 1,
            "loss": loss,
            "usage": [s % 3 + j for j in range(k)],
            "usage_entropy": 1.0,
            "active_prototypes": active,
            "num_prototypes": k,
        }
        for s in range(n)
    ]


# --- live charts --------------------------------------------------------------------------------
def test_loss_figure_draws_ln_k_at_the_right_height() -> None:
    fig = figures.loss_figure(_steps(5, k=10), num_prototypes=10)
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 1
    assert lines[0].y0 == pytest.approx(math.log(10)) and lines[0].y1 == pytest.approx(math.log(10))
    assert "2.303" in fig.layout.annotations[0].text
    assert list(fig.data[0].x) == [1, 2, 3, 4, 5]


def test_loss_figure_without_k_has_no_line_and_shows_pcl_parts() -> None:
    events = [
        {"type": "step", "step": 1, "loss": 3.0, "loss_infonce": 2.0, "loss_protonce": 1.0},
        {"type": "epoch", "epoch": 0},
    ]
    fig = figures.loss_figure(events, num_prototypes=None)
    assert not fig.layout.shapes
    assert [t.name for t in fig.data] == ["loss", "InfoNCE", "ProtoNCE"]


def test_usage_heatmap_is_prototype_by_step() -> None:
    fig = figures.usage_heatmap(_steps(7, k=5))
    z = np.asarray(fig.data[0].z)
    assert z.shape == (5, 7)
    # Column s is the usage list of step s: prototype j got s % 3 + j images.
    assert z[2, 4] == 4 % 3 + 2
    assert list(fig.data[0].x) == list(range(1, 8))


def test_usage_heatmap_bins_long_runs() -> None:
    xs, rows = figures.usage_matrix(_steps(1000, k=3), max_columns=100)
    assert len(rows) == 3 and len(rows[0]) == len(xs) == 100
    assert xs[-1] == 1000


def test_activity_knn_and_phi_figures() -> None:
    events: list[dict[str, Any]] = [
        *_steps(3),
        {"type": "epoch", "epoch": 0, "knn_top1": 0.25},
        {
            "type": "epoch",
            "epoch": 1,
            "knn_top1": 0.5,
            "num_clusters": [3, 2],
            "phi": [[0.1, 0.3, 0.2], [0.2, 0.2]],
            "cluster_sizes": [[10, 2, 5], [9, 8]],
        },
    ]
    act = figures.activity_figure(events, num_prototypes=4)
    assert len(act.data) == 2 and list(act.data[0].y) == [4, 4, 4]
    knn = figures.knn_figure(events)
    assert list(knn.data[0].y) == [25.0, 50.0] and list(knn.data[0].x) == [1, 2]
    phis = figures.latest_phi(events)
    assert [p["k"] for p in phis] == [3, 2]
    bars = figures.phi_bar_figure(phis[0]["phi"], phis[0]["sizes"])
    assert list(bars.data[0].y) == [0.1, 0.2, 0.3]  # sorted tight → loose
    assert list(bars.data[0].customdata) == [10, 5, 2]  # sizes follow their clusters
    scatter = figures.phi_size_figure(phis[0]["phi"], phis[0]["sizes"])
    assert list(scatter.data[0].x) == [10, 2, 5] and scatter.layout.xaxis.type == "log"


def test_num_prototypes_from_the_steps_else_the_config() -> None:
    start = {"id": 7, "type": "start", "config": {"method": "swav", "swav": {"num_prototypes": 12}}}
    assert run_events.num_prototypes([start]) == 12
    assert run_events.num_prototypes([start, *_steps(1, k=5)]) == 5


def test_parse_metrics_takes_the_backend_s_cursor() -> None:
    answer = {
        "events": [{"id": 4, "type": "step", "loss": 2.0}, {"id": 6, "type": "end"}],
        "next": 6,
        "more": False,
        "alert": None,
    }
    events, cursor = run_events.parse_metrics(answer)
    assert cursor == 6 and events[0]["loss"] == 2.0 and len(events) == 2
    assert run_events.parse_metrics({"events": [], "next": 6}) == ([], 6)
    assert run_events.parse_metrics(None) == ([], None)


def test_last_end_belongs_to_the_latest_session() -> None:
    first = [{"type": "start"}, {"type": "end", "status": "stopped"}]
    assert run_events.is_finished(first)
    assert not run_events.is_finished([*first, {"type": "start"}, {"type": "step", "loss": 1.0}])


def test_run_payload_turns_ablations_into_config_switches() -> None:
    form: dict[str, Any] = {
        "method": "swav",
        "dataset": "shapes",
        "backbone": "small_cnn",
        "epochs": 2,
        "batch_size": 32,
        "k": 10,
        "epsilon": 0.05,
        "temperature": 0.1,
        "pcl_k": [],
        "no_equipartition": True,
        "no_freeze": True,
        "fixed_phi": False,
    }
    body = run_form.run_payload(form)
    assert body["equipartition"] is False and body["freeze_prototypes_iters"] == 0
    assert body["num_prototypes"] == 10 and "fixed_phi" not in body
    pcl = run_form.run_payload({**form, "method": "pcl", "pcl_k": [8, 12], "fixed_phi": True})
    assert pcl["num_clusters"] == [8, 12] and pcl["fixed_phi"] is True
    assert "equipartition" not in pcl
    assert body["recipe"] == "cpu"  # the default when the form names none
    paper = run_form.run_payload({**form, "recipe": "paper"})
    assert paper["recipe"] == "paper" and paper["overrides"] == {"swav.freeze_prototypes_epochs": 0}
    assert run_form.parse_ks("40, 80;160") == [40, 80, 160]


# --- maps and selection -----------------------------------------------------------------------
def _points() -> list[dict[str, Any]]:
    # Indices deliberately not 0..n-1 and not in order: position must never stand for index.
    return [
        {
            "index": 100 + 7 * i,
            "x": float(i),
            "y": float(-i),
            "label": i % 3,
            "cluster": i % 2,
            "phi": 0.1 * i,
            "confidence": 0.5,
        }
        for i in range(12)
    ]


def _map(points: list[dict[str, Any]]) -> MapColumns:
    # The map as Explore draws it: a points answer read into columns.
    cols = columns_of({"points": points})
    assert cols is not None
    return cols


def test_map_figure_customdata_is_the_dataset_index() -> None:
    pts = _points()
    fig = figures.webgl_map_figure(_map(pts), "label", label_names=["a", "b", "c"])
    assert len(fig.data) == 3  # one trace per label
    by_index = {p["index"]: p for p in pts}
    for trace in fig.data:
        for x, cd in zip(trace.x, trace.customdata, strict=True):
            assert by_index[int(cd[0])]["x"] == x
    assert fig.data[1].name == "1: b"
    continuous = figures.webgl_map_figure(_map(pts), "phi")
    assert len(continuous.data) == 1 and continuous.data[0].marker.showscale


def test_selected_indices_reads_customdata_not_positions() -> None:
    fig = figures.webgl_map_figure(_map(_points()), "cluster")
    trace1 = fig.data[1]
    # What Streamlit returns: point_index is the position within trace 1, not an image index.
    selection = {
        "selection": {
            "points": [
                {"curve_number": 1, "point_index": 0, "customdata": list(trace1.customdata[0])},
                {"curve_number": 1, "point_index": 2, "customdata": list(trace1.customdata[2])},
                {"curve_number": 1, "point_index": 2, "customdata": list(trace1.customdata[2])},
            ]
        }
    }
    got = figures.selected_indices(selection)
    assert got == [trace1.customdata[0][0], trace1.customdata[2][0]]
    assert got != [0, 2]
    assert figures.selected_indices({"selection": {"points": [{"customdata": 42}]}}) == [42]
    assert figures.selected_indices(None) == []


def test_diagnostic_and_compare_figures() -> None:
    spec = figures.spectrum_figure([0.5, 1.0, 0.0])
    assert spec.layout.yaxis.type == "log" and spec.data[0].y[0] == 1.0
    assert min(spec.data[0].y) > 0
    hist = figures.usage_histogram_figure([0, 5, 3])
    assert list(hist.data[0].y) == [5, 3, 0]
    assert list(hist.data[1].x) == ["0"]  # the empty prototype gets a visible marker
    assert hist.layout.shapes[0].y0 == pytest.approx(8 / 3)
    pts = _points()
    pair = figures.aligned_maps_figure(pts, pts[:5])
    assert len(pair.data) == 2 and len(pair.data[1].x) == 5
    delta = figures.delta_bar_figure(
        [{"prototype": 3, "delta": 4}, {"prototype": 1, "delta": -2}], "moves"
    )
    assert list(delta.data[0].y) == [-2, 4]


# --- learn demos ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", learn_demos.SCORE_KINDS)
def test_sinkhorn_codes_are_balanced_and_finite(kind: learn_demos.ScoreKind) -> None:
    b, k = 12, 6
    scores = learn_demos.example_scores(kind, b, k, seed=1)
    assert scores.shape == (b, k) and np.all(np.abs(scores) <= 1 + 1e-9)
    codes = learn_demos.sinkhorn(scores, epsilon=0.05, n_iters=500)
    np.testing.assert_allclose(codes.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(codes.sum(axis=0), b / k, rtol=1e-3)
    tiny = learn_demos.sinkhorn(scores, epsilon=1e-3, n_iters=3)  # exp(1000) would overflow
    assert np.all(np.isfinite(tiny))
    np.testing.assert_allclose(tiny.sum(axis=1), 1.0, atol=1e-9)


def test_sinkhorn_matches_the_direct_formula_at_moderate_epsilon() -> None:
    scores = learn_demos.example_scores("random", 8, 5, seed=2)
    eps, iters = 0.1, 3
    q = np.exp(scores / eps).T
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True) * 5
        q /= q.sum(axis=0, keepdims=True) * 8
    np.testing.assert_allclose(learn_demos.sinkhorn(scores, eps, iters), (q * 8).T, rtol=1e-9)


def test_softmax_rows_sum_to_one() -> None:
    p = learn_demos.softmax(learn_demos.example_scores("clustered", 5, 4), temperature=0.1)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_phi_formula_on_a_known_cluster() -> None:
    # Four points at distance 1 from their centroid (0, 0): φ = 4·1 / (4 ln(4 + 10)).
    pts = np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    toy = learn_demos.concentration(pts, np.zeros(4, dtype=np.int64))
    assert toy.phi[0] == pytest.approx(1 / math.log(14))
    assert toy.sizes.tolist() == [4]
    points, labels = learn_demos.make_toy_points([0.2, 1.0], [30, 30], seed=0)
    wide = learn_demos.concentration(points, labels)
    assert wide.phi[1] > wide.phi[0]  # the looser cluster has the larger φ
    fig = figures.toy_clusters_figure(
        points.tolist(), labels.tolist(), wide.centroids.tolist(), wide.phi.tolist()
    )
    assert len(fig.data) == 4


def test_matrix_heatmap_prints_row_and_column_sums() -> None:
    m = [[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]]
    fig = figures.matrix_heatmap(m, "codes")
    texts = [a.text for a in fig.layout.annotations]
    assert texts[:3] == ["1.00", "1.00", "1.00"] and texts[3:] == ["1.75", "1.25"]


# --- client error handling (no server needed) -------------------------------------------------
def test_client_reports_an_unreachable_backend_with_its_url() -> None:
    client = Client("http://127.0.0.1:9", token="t")  # port 9 (discard): nothing listens
    assert client._session.headers["Authorization"] == "Bearer t"
    with pytest.raises(BackendUnavailable) as info:
        client.runs()
    assert "http://127.0.0.1:9" in info.value.message
    assert isinstance(info.value, BackendError)


def test_detail_text_names_the_field() -> None:
    detail = [{"loc": ["body", "epsilon"], "msg": "Input should be less than or equal to 10"}]
    assert _detail_text(detail) == "epsilon: Input should be less than or equal to 10"


def test_checkpoint_labels_tell_a_paper_run_from_a_cpu_run() -> None:
    """Compare's pickers: a paper checkpoint and a cpu one of the same method and data differ."""
    from frontend.pickers import checkpoint_label

    base = {"id": 7, "run_name": "swav", "method": "swav", "dataset": "shapes", "step": 60}
    paper = checkpoint_label({**base, "recipe": "paper"})
    cpu = checkpoint_label({**base, "id": 8, "recipe": "cpu"})
    assert "paper recipe" in paper and "swav" in paper and "shapes" in paper
    assert "paper" not in cpu and "swav" in cpu
