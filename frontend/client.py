"""The frontend's only door to the backend: a small HTTP client over `requests`.

Base URL from PROTOSCOPE_API (default http://127.0.0.1:8000); PROTOSCOPE_TOKEN, when set, is
sent as `Authorization: Bearer …`. Errors come back as `BackendError` carrying the backend's own
`detail` message (pages show it with st.error, never a traceback). Slow analysis answers 202
with its progress; those calls return a `Pending` so the page can draw a progress bar and poll.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

DEFAULT_API = "http://127.0.0.1:8000"
# Short enough that a dead backend is reported quickly, long enough for a cached analysis.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 60.0


class BackendError(Exception):
    """The backend answered with an error (status ≥ 400) or could not be reached (status None)."""

    def __init__(self, message: str, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.url = url


class BackendUnavailable(BackendError):
    """No answer at all: the server is not running, or the URL is wrong."""


@dataclass(frozen=True)
class Pending:
    """A 202 answer: the backend is still computing; `progress` is in [0, 1] when known."""

    progress: float | None
    message: str


def _detail_text(detail: Any) -> str:
    """FastAPI's `detail`: a string, or (422) a list of {loc, msg} naming the bad fields."""
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(x) for x in item.get("loc", []) if x not in ("body", "query"))
                msg = str(item.get("msg", item))
                parts.append(f"{loc}: {msg}" if loc else msg)
            else:
                parts.append(str(item))
        return "; ".join(parts)
    if isinstance(detail, Mapping):
        return str(detail.get("message") or detail.get("msg") or detail)
    return str(detail)


def _pending_from(body: Any) -> Pending:
    progress: float | None = None
    message = "still computing"
    if isinstance(body, Mapping):
        raw = body.get("progress")
        if isinstance(raw, (int, float)):
            progress = min(1.0, max(0.0, float(raw)))
        for key in ("message", "detail", "stage", "status"):
            if isinstance(body.get(key), str) and body[key]:
                message = body[key]
                break
    return Pending(progress, message)


class Client:
    """One backend. Cheap to create; pages make one per script run."""

    def __init__(
        self, base_url: str | None = None, token: str | None = None, timeout: float | None = None
    ) -> None:
        self.base_url = (base_url or os.environ.get("PROTOSCOPE_API") or DEFAULT_API).rstrip("/")
        self.token = token if token is not None else os.environ.get("PROTOSCOPE_TOKEN") or None
        self.timeout = (CONNECT_TIMEOUT_S, timeout or READ_TIMEOUT_S)
        self._session = requests.Session()
        if self.token:
            self._session.headers["Authorization"] = f"Bearer {self.token}"

    # --- plumbing ---------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = self.url(path)
        try:
            resp = self._session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            raise BackendUnavailable(
                f"Cannot reach the protoscope backend at {self.base_url}. Start it with "
                f"`protoscope serve` or point PROTOSCOPE_API at it.",
                url=url,
            ) from exc
        except requests.Timeout as exc:
            raise BackendUnavailable(
                f"The backend at {self.base_url} did not answer {method} {path} in time.", url=url
            ) from exc
        if resp.status_code >= 400:
            try:
                detail = _detail_text(resp.json().get("detail", resp.text))
            except (ValueError, AttributeError):
                detail = resp.text.strip() or resp.reason
            raise BackendError(
                f"{method} {path} failed ({resp.status_code}): {detail}",
                status=resp.status_code,
                url=url,
            )
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._request(method, path, **kwargs)
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise BackendError(
                f"{method} {path}: the backend answered something that is not JSON",
                status=resp.status_code,
                url=resp.url,
            ) from exc

    def _maybe_pending(self, path: str, params: Mapping[str, Any] | None = None) -> Any | Pending:
        resp = self._request("GET", path, params=params)
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code == 202:
            return _pending_from(body)
        return body

    # --- service ----------------------------------------------------------------------------
    def health(self) -> Any:
        return self._json("GET", "/health")

    def datasets(self) -> Any:
        return self._json("GET", "/datasets")

    def image(
        self, dataset: str, index: int, size: int | None = None, data_root: str | None = None
    ) -> bytes:
        """PNG bytes, fetched server-side so a token never has to reach the browser.

        `data_root` is the folder of a cifar10 / stl10 / imagefolder set, as the analysis
        answers name it; without it the server looks only in its default place.
        """
        params: dict[str, Any] = {"size": size} if size else {}
        if data_root:
            params["data_root"] = data_root
        path = f"/datasets/{quote(dataset, safe='')}/images/{int(index)}"
        return self._request("GET", path, params=params or None).content

    # --- runs -------------------------------------------------------------------------------
    def runs(self) -> Any:
        return self._json("GET", "/runs")

    def run(self, run_id: int | str) -> Any:
        return self._json("GET", f"/runs/{run_id}")

    def create_run(self, payload: Mapping[str, Any]) -> Any:
        return self._json("POST", "/runs", json=dict(payload))

    def stop_run(self, run_id: int | str) -> Any:
        return self._json("POST", f"/runs/{run_id}/stop")

    def resume_run(self, run_id: int | str) -> Any:
        return self._json("POST", f"/runs/{run_id}/resume")

    def metrics(self, run_id: int | str, since: int | None = None) -> Any:
        params = {"since": since} if since is not None else None
        return self._json("GET", f"/runs/{run_id}/metrics", params=params)

    # --- checkpoints and analysis -----------------------------------------------------------
    def checkpoints(self) -> Any:
        return self._json("GET", "/checkpoints")

    def upload_checkpoint(self, filename: str, data: Any, name: str | None = None) -> Any:
        """POST /checkpoints: `data` is bytes or a file object; the backend validates it."""
        fields = {"name": name} if name else None
        return self._json(
            "POST",
            "/checkpoints",
            files={"file": (filename, data, "application/octet-stream")},
            data=fields,
        )

    def diagnostics(self, ckpt: int | str, **params: Any) -> Any | Pending:
        return self._maybe_pending(f"/checkpoints/{ckpt}/diagnostics", params or None)

    def embedding(self, ckpt: int | str, **params: Any) -> Any | Pending:
        return self._maybe_pending(f"/checkpoints/{ckpt}/embedding", params or None)

    def embedding_columns(self, ckpt: int | str, **params: Any) -> Any | Pending:
        """The map as one array per field ({columns: {index: [...], x: [...], …}}): the form
        a map of tens of thousands of points travels in."""
        return self.embedding(ckpt, **{**params, "format": "columns"})

    def prototypes(self, ckpt: int | str, **params: Any) -> Any | Pending:
        return self._maybe_pending(f"/checkpoints/{ckpt}/prototypes", params or None)

    def gallery(self, ckpt: int | str, k: int, **params: Any) -> Any | Pending:
        return self._maybe_pending(f"/checkpoints/{ckpt}/prototypes/{int(k)}/gallery", params)

    def neighbours(self, ckpt: int | str, index: int, **params: Any) -> Any | Pending:
        return self._maybe_pending(f"/checkpoints/{ckpt}/images/{int(index)}/neighbours", params)

    def compare(self, a: int | str, b: int | str, **params: Any) -> Any | Pending:
        return self._maybe_pending("/compare", {"a": a, "b": b, **params})

    # --- sweeps -----------------------------------------------------------------------------
    def sweeps(self) -> Any:
        return self._json("GET", "/sweeps")

    def sweep(self, sweep_id: int | str, diagnose: bool = True) -> Any:
        """A sweep with its cells; `diagnose` lets the backend start finished cells' reports."""
        params = None if diagnose else {"diagnose": "false"}
        return self._json("GET", f"/sweeps/{sweep_id}", params=params)

    def create_sweep(self, payload: Mapping[str, Any]) -> Any:
        return self._json("POST", "/sweeps", json=dict(payload))

    def stop_sweep(self, sweep_id: int | str) -> Any:
        return self._json("POST", f"/sweeps/{sweep_id}/stop")

    # --- a run's timeline -------------------------------------------------------------------
    def timeline(self, run_id: int | str, **params: Any) -> Any | Pending:
        return self._maybe_pending(f"/runs/{run_id}/timeline", params or None)

    def timeline_gallery(self, run_id: int | str, k: int, **params: Any) -> Any | Pending:
        return self._maybe_pending(f"/runs/{run_id}/timeline/prototypes/{int(k)}", params or None)
