"""The FastAPI app factory: `create_app(settings)`.

Start-up opens the store (creating the data dir and the schema), settles runs a previous
server left behind, starts the job monitor and the event broker; shutdown stops the training
processes (they checkpoint first) and marks them interrupted, so they can be resumed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from backend import errors
from backend.analysis_cache import AnalysisService
from backend.app_services import Services
from backend.auth import TokenAuth
from backend.event_wakeup import EventBroker
from backend.images import ImageCache
from backend.routes import (
    analysis,
    checkpoints,
    datasets,
    events,
    health,
    runs,
    sweeps,
    timeline,
)
from backend.routes.sweeps import diagnose_ended_cell
from backend.settings import Settings
from backend.store import Store
from backend.training_jobs import JobManager

log = logging.getLogger("protoscope")

DESCRIPTION = """
Trains SwAV / PCL runs (each in its own process), keeps every run and event in SQLite, streams
events live (Server-Sent Events, resumable with Last-Event-ID) and serves analyses of
checkpoints. When the server was started with PROTOSCOPE_TOKEN, every request needs
`Authorization: Bearer <token>` (or `?token=`).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        data = settings.data_path
        data.mkdir(parents=True, exist_ok=True)
        store = Store(settings.db_path, data)
        await anyio.to_thread.run_sync(store.init_schema)
        jobs = JobManager(settings, store)
        broker = EventBroker(store, settings.event_poll_s)
        analyses = AnalysisService(
            data / "cache" / "analysis",
            settings.analysis_workers,
            scrub=lambda text: text.replace(f"{data}/", ""),
        )
        svc = Services(settings, store, jobs, broker, analyses, ImageCache())
        # A sweep cell is diagnosed as soon as its process ends, so the Collapse map opens on
        # verdicts that are ready rather than starting them all when someone looks.
        jobs.on_ended = diagnose_ended_cell(svc)
        await anyio.to_thread.run_sync(jobs.start)
        await broker.start()
        app.state.services = svc
        if settings.warm_umap:
            analyses.warm_up()
        log.info(
            "protoscope: data in %s, up to %d runs at once", data, settings.max_concurrent_runs
        )
        try:
            yield
        finally:
            await broker.stop()
            await anyio.to_thread.run_sync(jobs.shutdown)
            svc.analysis.shutdown()

    app = FastAPI(
        title="protoscope",
        summary="A workbench for clustering-based contrastive learning (SwAV, PCL)",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (health, datasets, runs, events, checkpoints, analysis, sweeps, timeline):
        app.include_router(module.router)
    if settings.token:
        app.add_middleware(TokenAuth, token=settings.token)
    return app
