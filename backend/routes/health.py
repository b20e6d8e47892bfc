"""GET /health: is the service up, and what is it doing."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from fastapi import APIRouter, Depends

from backend.app_services import Services, get_services
from backend.schemas import HealthOut

router = APIRouter(tags=["service"])


def _version() -> str:
    try:
        return version("protoscope")
    except PackageNotFoundError:
        return "unknown"


@router.get("/health", response_model=HealthOut, summary="Liveness and a summary of the runs")
def health(svc: Services = Depends(get_services)) -> HealthOut:
    return HealthOut(
        status="ok",
        version=_version(),
        runs=svc.store.count_status(),
        max_concurrent_runs=svc.settings.max_concurrent_runs,
        token_required=svc.settings.token is not None,
    )
