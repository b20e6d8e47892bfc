"""`protoscope serve`: build the settings, refuse unsafe bindings, run uvicorn on the app.

Kept apart from protoscope/cli.py so the training CLI never imports FastAPI or uvicorn.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from backend.settings import Settings, SettingsError


def serve(
    host: str | None,
    port: int | None,
    data: Path | None,
    log_level: str = "info",
    access_log: bool = False,
) -> int:
    """Run the server until Ctrl-C / SIGTERM; 2 (with a one-line message) on bad settings."""
    try:
        settings = Settings.from_env(host=host, port=port, data_dir=data)
        settings.check_binding()
    except SettingsError as e:
        print(f"protoscope serve: {e}", file=sys.stderr)
        return 2
    import uvicorn

    from backend.app import create_app

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    print(
        f"protoscope API on http://{settings.host}:{settings.port} (data: {settings.data_path})",
        flush=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=access_log,
        # SSE streams stay open; on shutdown they get this long before uvicorn closes them,
        # so Ctrl-C does not hang on a browser tab that follows a run.
        timeout_graceful_shutdown=3,
    )
    return 0
