"""How long each analysis page waits for the backend, cold and cached, on one checkpoint.

    python benchmarks/page_loads.py [--steps 400] [--json PATH]

Starts a real backend (`protoscope serve`) on a temporary data folder, trains the default SwAV
on `shapes` for `--steps` steps through `POST /runs` (checkpoints on the clock and at each
epoch's end), then asks for what each page asks for, in a teacher's order, polling the 202
answers as the app does: Diagnose (2,000 test images), Explore (the map of the same images),
Prototypes (the galleries), the neighbours of one image (a click on the map), and Compare of
the first against the last checkpoint. Each request is timed from the first ask to the answer.
Then everything once more (the backend's answers are cached) and Compare of two checkpoints
whose features are cached but whose comparison is new. The targets (issue 16): the first page
≤ 20 s cold, every other page on the same checkpoint ≤ 3 s, Compare of two cached checkpoints
≤ 10 s.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from _common import OUT, load_average, parser

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import backend_server  # the same helper the tests start servers with


def wait_answer(url: str, params: dict[str, Any], timeout: float = 900) -> tuple[float, Any]:
    """(seconds, JSON) of an analysis request, polling its 202 answers every 0.5 s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        r = requests.get(url, params=params, timeout=60)
        if r.status_code == 200:
            return time.monotonic() - t0, r.json()
        if r.status_code != 202:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
        time.sleep(0.5)
    raise TimeoutError(url)


def train(api: str, steps: int) -> list[dict[str, Any]]:
    run = requests.post(
        f"{api}/runs", json={"method": "swav", "dataset": "shapes", "max_steps": steps}, timeout=30
    ).json()
    while requests.get(f"{api}/runs/{run['id']}", timeout=10).json()["status"] in (
        "queued",
        "running",
    ):
        time.sleep(1.0)
    ckpts = requests.get(f"{api}/checkpoints", params={"run_id": run["id"]}, timeout=10).json()
    return sorted(ckpts, key=lambda c: c["step"])


def pages(api: str, ck: int, other: int) -> dict[str, float]:
    """Seconds per page for checkpoint `ck` (and Compare of `other` against it)."""
    out: dict[str, float] = {}
    base = f"{api}/checkpoints/{ck}"
    out["diagnose"], _ = wait_answer(f"{base}/diagnostics", {"max_images": 2000})
    out["explore"], emb = wait_answer(f"{base}/embedding", {"max_images": 2000})
    out["prototypes"], _ = wait_answer(f"{base}/prototypes", {"max_images": 2000})
    index = emb["points"][0]["index"]
    out["click_neighbours"], _ = wait_answer(
        f"{base}/images/{index}/neighbours", {"max_images": 2000}
    )
    out["compare"], _ = wait_answer(f"{api}/compare", {"a": other, "b": ck, "max_images": 2000})
    return {k: round(v, 2) for k, v in out.items()}


def main() -> None:
    ap = parser(__doc__ or "")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 400)")
    args = ap.parse_args()
    steps = args.steps or (120 if args.quick else 400)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        # The backend as `make demo` and `protoscope serve` start it: UMAP compiled at start-up.
        with backend_server(data, env={"PROTOSCOPE_WARM_UMAP": "1"}) as api:
            t0 = time.monotonic()
            ckpts = train(api, steps)
            train_s = time.monotonic() - t0
            first, last = ckpts[0], ckpts[-1]
            load_before = load_average()
            cold = pages(api, last["id"], first["id"])
            cached = pages(api, last["id"], first["id"])
            # A comparison not asked before, of two checkpoints whose features are cached
            # (the middle one's by a Diagnose of its own).
            mid = ckpts[len(ckpts) // 2]
            wait_answer(f"{api}/checkpoints/{mid['id']}/diagnostics", {"max_images": 2000})
            fresh_compare, _ = wait_answer(
                f"{api}/compare", {"a": mid["id"], "b": last["id"], "max_images": 2000}
            )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "training_steps": steps,
        "training_wall_s": round(train_s, 1),
        "checkpoints": [
            {"id": c["id"], "step": c["step"], "epochs_done": c.get("epochs_done")} for c in ckpts
        ],
        "cold_s": cold,
        "cached_s": cached,
        "compare_of_cached_features_s": round(fresh_compare, 2),
        "load_before": load_before,
        "load_after": load_average(),
    }
    path = args.json or OUT / "page_loads.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
