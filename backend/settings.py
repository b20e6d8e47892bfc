"""The backend's settings: one validated object built from defaults, environment and CLI flags.

Every field can be set by an environment variable `PROTOSCOPE_<FIELD>` (upper case), except
`data_dir` (`PROTOSCOPE_DATA`); `PROTOSCOPE_DATA_ROOTS` holds paths joined by the OS path
separator. The upload limit is in MiB: `PROTOSCOPE_MAX_UPLOAD_MB`. Explicit keyword arguments
(the CLI's flags) win over the environment; an empty variable counts as unset. pydantic-settings
reads the environment; `from_env` turns its errors into one line naming the variable or flag.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "PROTOSCOPE_"
# Fields whose environment variable is not simply PROTOSCOPE_<FIELD>.
_ENV_NAMES = {"data_dir": "PROTOSCOPE_DATA"}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class SettingsError(ValueError):
    """A setting is invalid; the message names the variable or flag and what is allowed."""


class Settings(BaseSettings):
    """Where the backend keeps its data, how it listens and how much it may run at once."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    data_dir: Path = Field(
        Path("protoscope-data"),
        description="runs, checkpoints, uploads, caches, the database",
        validation_alias=AliasChoices("data_dir", _ENV_NAMES["data_dir"]),
    )
    # NoDecode: the variable is a path list, not JSON (see _split_roots).
    data_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        (),
        description="folders a user-given data set path (data_root) must lie in; "
        "empty: the data dir's datasets/ folder",
    )
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8000, ge=0, le=65535)
    token: str | None = Field(None, description="bearer token every request must carry")
    max_concurrent_runs: int = Field(1, ge=1, le=64, description="training processes at once")
    max_upload_mb: float = Field(
        1024.0, gt=0.0, description="largest checkpoint file accepted by POST /checkpoints (MiB)"
    )
    # Seconds between SSE pings on an idle stream; proxies drop connections silent for ~60 s.
    sse_ping_s: float = Field(10.0, gt=0.0, le=300.0)
    # How often the event broker looks for new events (the floor of the SSE delivery delay).
    event_poll_s: float = Field(0.05, gt=0.0, le=5.0)
    # How often the job monitor checks training processes; a killed one is noticed this fast.
    monitor_interval_s: float = Field(0.5, gt=0.0, le=30.0)
    # A stop request that the training process has not honoured after this long gets SIGKILL.
    stop_timeout_s: float = Field(60.0, gt=0.0)
    # On shutdown, training processes get this long to write a checkpoint before SIGKILL.
    shutdown_grace_s: float = Field(6.0, ge=0.0, le=600.0)
    analysis_workers: int = Field(2, ge=1, le=32, description="analysis threads")
    # A fresh analysis request waits this long for a quick answer before replying 202.
    analysis_wait_s: float = Field(1.0, ge=0.0, le=60.0)
    # Training runs at a lower CPU priority so the API stays responsive on a small machine.
    worker_nice: int = Field(5, ge=0, le=19)
    # Compile UMAP's numba code in the background at start-up, so the first map a user opens
    # does not pay the one-off compile (about 35 s on 2 cores). The tests switch it off.
    warm_umap: bool = Field(True, description="compile UMAP's numba code at start-up")

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(Path(p) for p in value.split(os.pathsep) if p)
        return value

    # --- derived ------------------------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        """The data dir, absolute (the worker processes get this path)."""
        return self.data_dir.expanduser().resolve()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def db_path(self) -> Path:
        return self.data_path / "protoscope.sqlite3"

    def allowed_roots(self) -> list[Path]:
        """Resolved folders that may hold user-given data sets."""
        roots = self.data_roots or (self.data_path / "datasets",)
        return [Path(r).expanduser().resolve() for r in roots]

    def binds_loopback(self) -> bool:
        return is_loopback(self.host)

    def check_binding(self) -> None:
        """Refuse to listen beyond this machine without a token: anyone could train and upload."""
        if not self.binds_loopback() and not self.token:
            raise SettingsError(
                f"refusing to listen on {self.host!r} without a token: set PROTOSCOPE_TOKEN to a "
                "secret string (every request must then carry it as 'Authorization: Bearer "
                "<token>'), or listen on 127.0.0.1"
            )

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Defaults, then the environment, then `overrides` (None values are ignored)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**given)
        except ValidationError as e:
            parts = []
            for err in e.errors():
                field = str(err["loc"][0]) if err["loc"] else "settings"
                if field in given:
                    where = f"--{field.replace('_', '-')}"
                else:
                    where = _ENV_NAMES.get(field, ENV_PREFIX + field.upper())
                parts.append(f"{where}: {err['msg']}")
            raise SettingsError("invalid settings: " + "; ".join(parts)) from None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual names of this machine's loopback interface."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
