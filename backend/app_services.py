"""The objects one app instance works with, created in its lifespan and handed to routes.

Nothing here is global: each `create_app(settings)` gets its own store, job manager, broker,
analysis pool and image cache (tests run several apps side by side).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from backend.analysis_cache import AnalysisService
from backend.event_wakeup import EventBroker
from backend.images import ImageCache
from backend.paths import DataRootError, resolve_data_root
from backend.settings import Settings
from backend.store import Store
from backend.training_jobs import JobManager


def _found(row: dict[str, Any] | None, missing: str) -> dict[str, Any]:
    if row is None:
        raise HTTPException(status_code=404, detail=missing)
    return row


@dataclass
class Services:
    settings: Settings
    store: Store
    jobs: JobManager
    broker: EventBroker
    analysis: AnalysisService
    images: ImageCache

    def scrub(self, text: str) -> str:
        """Server paths in a message shortened to paths relative to the data dir."""
        return text.replace(f"{self.settings.data_path}/", "")

    def data_root(self, value: str | None) -> str | None:
        """A user-given data set folder, resolved and checked (400 when outside the roots)."""
        if value is None:
            return None
        try:
            return str(resolve_data_root(value, self.settings.allowed_roots()))
        except DataRootError as e:
            raise HTTPException(status_code=400, detail=str(e)) from None

    # The stored row of a run, sweep or checkpoint a request names; 404 for an unknown id.
    def run_row(self, run_id: int) -> dict[str, Any]:
        return _found(self.store.get_run(run_id), f"no run {run_id}")

    def sweep_row(self, sweep_id: int) -> dict[str, Any]:
        return _found(self.store.get_sweep(sweep_id), f"no sweep {sweep_id}")

    def checkpoint_row(self, ck_id: int) -> dict[str, Any]:
        return _found(self.store.get_checkpoint(ck_id), f"no checkpoint {ck_id}")

    def checkpoint_path(self, ck_id: int) -> tuple[dict[str, Any], Path]:
        """The checkpoint row and its file; 404 for an unknown id or a file that is gone."""
        row = self.checkpoint_row(ck_id)
        path = self.store.absolute(row["path"])
        if not path.is_file():
            raise HTTPException(
                status_code=404, detail=f"checkpoint {ck_id}: its file {row['path']} is gone"
            )
        return row, path


def get_services(request: Request) -> Services:
    return request.app.state.services
