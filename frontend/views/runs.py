"""Runs: start a run, list runs, and watch one train live (polling, never blocking the page)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import streamlit as st

from frontend import run_events, widgets
from frontend.client import BackendError, Client
from frontend.live_charts import draw_live
from frontend.pickers import list_runs, runs_of
from frontend.run_form import ABLATIONS, parse_ks, run_payload

# A live view asks for new events this often; each tick reruns only its fragment.
LIVE_POLL_S = 2.0
# A long run's history arrives in pages of 1000 events; read at most this many per tick.
MAX_PAGES_PER_PULL = 20
# The statuses the backend's run store gives (backend/store.py); the page reads, never adds.
ACTIVE_STATUSES = {"queued", "running"}


# --- the form -----------------------------------------------------------------------------
def _dataset_names(c: Client) -> list[str]:
    try:
        answer = c.datasets()
    except BackendError:
        return ["shapes", "digits"]
    items = answer if isinstance(answer, list) else (answer or {}).get("datasets", [])
    names = [d["name"] if isinstance(d, Mapping) else str(d) for d in items]
    return names or ["shapes"]


def start_form(c: Client) -> None:
    method = st.radio(
        "Method",
        ["swav", "pcl"],
        horizontal=True,
        key="form_method",
        help="SwAV: online Sinkhorn codes over learnable prototypes. PCL: MoCo + k-means "
        "prototypes with per-cluster concentration φ.",
    )
    recipe = st.radio(
        "Recipe",
        ["cpu", "paper"],
        horizontal=True,
        key="form_recipe",
        format_func=lambda r: {"cpu": "cpu (tuned for minutes on a CPU)", "paper": "paper"}[r],
        help="cpu: defaults tuned for a few minutes on a plain CPU. paper: the official code's "
        "hyper-parameters (multi-crop 2 + 6, LARS, queue; PCL with SGD, per-sample positives, "
        "5 k-means restarts). The README's 'Deviations from the papers' lists every difference.",
    )
    paper = recipe == "paper"
    with st.form("start_run", border=True):
        c1, c2, c3, c4 = st.columns(4)
        name = c1.text_input("Name (optional)", key="form_name")
        dataset = c1.selectbox("Data set", _dataset_names(c), key="form_dataset")
        backbone = c1.selectbox(
            "Backbone",
            ["small_cnn", "resnet18", "resnet50"],
            key="form_backbone",
            help="small_cnn is fast on a CPU; resnet50 is the official checkpoints' layout.",
        )
        epochs = c2.number_input("Epochs", 1, 10_000, 10, key="form_epochs")
        batch = c2.number_input("Batch size", 2, 4096, 64, key="form_batch")
        minutes = c2.number_input(
            "Time budget (minutes, 0 = none)", 0.0, 10_000.0, 0.0, key="form_minutes"
        )
        max_steps = c2.number_input(
            "Max steps (0 = none)",
            0,
            10**9,
            0,
            key="form_max_steps",
            help="Stop after this many training steps, however fast the machine is.",
        )
        amp = c1.selectbox(
            "Precision",
            ["auto", "off", "on"],
            key="form_amp",
            help="auto: bf16/fp16 only where this machine runs it faster (a CPU with native "
            "bf16, a GPU); off: float32; on: reduced precision even where it is slower.",
        )
        if method == "swav":
            k = c3.number_input(
                "Prototypes K",
                2,
                100_000,
                3000 if paper else 128,
                key=f"form_k_{recipe}",
                help="The loss of flat predictions is ln K: the live chart draws that line.",
            )
            eps = c3.number_input(
                "ε (Sinkhorn entropy)",
                0.005,
                10.0,
                0.05 if paper else 0.02,
                step=0.005,
                format="%.3f",
                key=f"form_eps_{recipe}",
                help="Smaller ε: harder codes. 0.02–0.05 is typical.",
            )
            temp = c3.number_input(
                "Temperature τ", 0.01, 10.0, 0.1, step=0.01, key="form_temp_swav"
            )
            pcl_k_text = ""
        else:
            pcl_k_text = c3.text_input(
                "Clusters per clustering (comma-separated K)", "40, 80, 160", key="form_pcl_k"
            )
            temp = c3.number_input(
                "Temperature τ (mean φ)", 0.01, 10.0, 0.2, step=0.01, key="form_temp_pcl"
            )
            eps, k = 0.02, 0
        c4.markdown("**Teaching ablations**")
        switches: dict[str, bool] = {}
        for key, (label, explain) in ABLATIONS.items():
            usable = key.startswith("fixed") == (method == "pcl")
            switches[key] = c4.checkbox(label, key=f"form_{key}", disabled=not usable, help=explain)
            c4.caption(explain)
        submitted = st.form_submit_button("Start run", type="primary")
    if not submitted:
        return
    try:
        pcl_k = parse_ks(pcl_k_text) if method == "pcl" else []
    except ValueError:
        st.error("Clusters per clustering: write whole numbers separated by commas, e.g. 40, 80")
        return
    form = {
        "method": method,
        "recipe": recipe,
        "dataset": dataset,
        "backbone": backbone,
        "epochs": epochs,
        "batch_size": batch,
        "k": k,
        "epsilon": eps,
        "temperature": temp,
        "pcl_k": pcl_k,
        "max_minutes": minutes,
        "max_steps": max_steps,
        "amp": amp,
        "name": name,
        **switches,
    }
    try:
        with st.spinner("Starting the run…"):
            created = c.create_run(run_payload(form))
    except BackendError as exc:
        widgets.show_error(exc)
        return
    run_id = (created or {}).get("id")
    st.session_state["_keep_run"] = run_id
    st.session_state.pop("runs_pick", None)
    st.toast(f"Run {run_id} started")
    st.rerun()


# --- run list -----------------------------------------------------------------------------
def run_label(run: Mapping[str, Any]) -> str:
    status = str(run.get("status", "?"))
    cfg = run.get("config") or {}
    method = run.get("method") or cfg.get("method") or ""
    data = run.get("dataset") or (cfg.get("data") or {}).get("name") or ""
    name = run.get("name") or ""
    recipe = "paper recipe" if cfg.get("recipe") == "paper" else ""
    bits = [f"#{run.get('id')}", name, method, data, recipe]
    return " · ".join(b for b in bits if b) + f" ({status})"


def runs_table(runs: list[dict[str, Any]]) -> None:
    rows = []
    for r in runs:
        cfg = r.get("config") or {}
        rows.append(
            {
                "id": r.get("id"),
                "name": r.get("name") or "",
                "method": r.get("method") or cfg.get("method"),
                "data set": r.get("dataset") or (cfg.get("data") or {}).get("name"),
                "status": r.get("status"),
                "step": r.get("step") or 0,  # none logged yet: 0, not a grey "None"
                # ISO 8601 UTC from the backend; seconds are precise enough to tell runs apart.
                "created (UTC)": str(r.get("created_at") or r.get("created") or "")[:19].replace(
                    "T", " "
                ),
                "reason": r.get("reason") or "",
            }
        )
    st.dataframe(rows, hide_index=True, width="stretch")


def runs_table_live(c: Client, runs: list[dict[str, Any]]) -> None:
    """The table in a fragment of its own that re-reads the runs while any is active.

    Drawn once with the page, it showed the step of the page load (0) beside a live view that
    had moved on; now it ticks with the live view. A sibling fragment, not a nested one.
    """
    active = any(str(r.get("status")) in ACTIVE_STATUSES for r in runs)

    def body() -> None:
        fresh = runs
        if active:
            # On an error keep the last table; the live view shows the error.
            with contextlib.suppress(BackendError):
                fresh = runs_of(c.runs()) or runs
        runs_table(fresh)

    st.fragment(run_every=LIVE_POLL_S if active else None)(body)()


# --- the live view ------------------------------------------------------------------------
def _live_state(run_id: Any) -> dict[str, Any]:
    """Cursor and accumulated events of one run, kept across reruns in session_state."""
    all_live: dict[Any, dict[str, Any]] = st.session_state.setdefault("live", {})
    return all_live.setdefault(run_id, {"cursor": None, "events": []})


def pull_events(c: Client, run_id: Any) -> list[dict[str, Any]]:
    """Fetch what is new since the cursor, append it, return everything seen so far."""
    state = _live_state(run_id)
    for _ in range(MAX_PAGES_PER_PULL):
        answer = c.metrics(run_id, since=state["cursor"])
        events, cursor = run_events.parse_metrics(answer)
        if isinstance(answer, Mapping):
            # The backend judges collapse on the run's latest steps; every page says it anew.
            state["alert"] = answer.get("alert")
        if events:
            state["events"].extend(events)
        if cursor is not None:
            state["cursor"] = cursor
        # `more`: the page was full (a long run's history); ask again right away.
        if not (isinstance(answer, Mapping) and answer.get("more") and events):
            break
    return state["events"]


def live_view(c: Client, run: Mapping[str, Any]) -> None:
    """A fragment that pulls new events and redraws; it ticks only while the run is active."""
    active = str(run.get("status")) in ACTIVE_STATUSES

    def body() -> None:
        try:
            events = pull_events(c, run["id"])
        except BackendError as exc:
            widgets.show_error(exc)
            return
        state = _live_state(run["id"])
        draw_live(events, run, state.get("alert"))
        # The run just ended: rerun the whole page once so status, buttons and polling update.
        end = run_events.last_end(events)
        if active and end is not None and state.get("end_handled") != end.get("id"):
            state["end_handled"] = end.get("id")
            st.rerun(scope="app")

    st.fragment(run_every=LIVE_POLL_S if active else None)(body)()


def run_controls(c: Client, run: Mapping[str, Any]) -> None:
    status = str(run.get("status"))
    cols = st.columns([1, 1, 6])
    if cols[0].button(
        "Stop", icon=":material/stop:", key="run_stop", disabled=status not in ACTIVE_STATUSES
    ):
        with widgets.backend_errors(stop=False):
            c.stop_run(run["id"])
            st.toast("Stop requested: the run saves a checkpoint and ends")
            st.rerun()
    if cols[1].button(
        "Resume",
        icon=":material/play_arrow:",
        key="run_resume",
        disabled=not run.get("resumable"),  # the backend's rule (GET /runs/{id})
    ):
        with widgets.backend_errors(stop=False):
            c.resume_run(run["id"])
            st.toast("Resuming from the last checkpoint")
            st.rerun()
    reason = run.get("reason")
    if status == "failed" and reason:
        st.error(f"Run failed: {reason}")


def import_form(c: Client) -> None:
    """Upload a checkpoint: protoscope's own, or an official SwAV / PCL release."""
    st.caption(
        "A protoscope `.pt`, or an official release such as SwAV's `swav_800ep_pretrain.pth.tar` "
        "or PCL's `PCL_v2_epoch200.pth.tar` (ResNet-50). The backend reads it with "
        "`torch.load(weights_only=True)` and keeps it only if it builds a model; the analysis "
        "pages then list it. Official checkpoints name no data set: pick the images on each "
        "page under **Analysed on** (CIFAR-10, STL-10 or a folder on the server; `shapes` at "
        "224 px otherwise)."
    )
    with st.form("import_checkpoint", border=False, clear_on_submit=True):
        upload = st.file_uploader("Checkpoint file", type=["pt", "pth", "tar"], key="import_file")
        label = st.text_input("Name (optional)", key="import_name", max_chars=120)
        submitted = st.form_submit_button("Import", icon=":material/upload:")
    if not submitted:
        return
    if upload is None:
        st.warning("Choose a checkpoint file first.")
        return
    try:
        with st.spinner(f"Uploading and checking {upload.name} …"):
            ckpt = c.upload_checkpoint(upload.name, upload.getvalue(), label or None)
    except BackendError as exc:
        st.error(exc.message)
        return
    st.success(
        f"Imported checkpoint #{ckpt.get('id')} ({ckpt.get('method', '?')}). Open it on "
        "**Explore**, **Prototypes** or **Diagnose**."
    )


def main() -> None:
    st.title("Runs")
    c = widgets.require_backend()
    runs = list_runs(c)
    with st.expander("Start a new run", expanded=not runs):
        start_form(c)
    with st.expander("Import a checkpoint"):
        import_form(c)
    if not runs:
        st.info("No runs yet: start one with the form above.")
        return
    st.subheader("All runs")
    runs_table_live(c, runs)
    st.subheader("Live view")
    run = widgets.pick_row("Run", runs, run_label, key="runs_pick", shared="run")
    if run is None:
        return
    run_controls(c, run)
    live_view(c, run)


main()
