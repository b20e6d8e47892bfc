"""Reading the backend's Server-Sent Events in tests and benchmarks, over httpx-sse.

The product itself reads no SSE (the browser's page polls JSON); the tests read the stream to
check ids, order and resumption, as a browser's EventSource would. `EventStream` is one
connection: it sends `Last-Event-ID` when asked to resume, exposes the answer's status (204
for a finished run with nothing newer) and remembers the last id it saw. Comment lines (the
greeting, the keep-alive pings) are not messages: httpx-sse skips them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, connect_sse


@dataclass
class Message:
    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    """One connection to an SSE endpoint; iterate it for its messages."""

    def __init__(
        self,
        url: str,
        last_event_id: int | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: tuple[float, float] = (5.0, 60.0),
    ) -> None:
        hdrs = dict(headers or {})
        if last_event_id is not None:
            hdrs["Last-Event-ID"] = str(last_event_id)
        connect, read = timeout
        self._client = httpx.Client(timeout=httpx.Timeout(read, connect=connect))
        self._connection = connect_sse(self._client, "GET", url, headers=hdrs)
        self._source: EventSource = self._connection.__enter__()
        self.response = self._source.response
        self.status_code = self.response.status_code
        self.last_id: str | None = None

    def __iter__(self) -> Iterator[Message]:
        if self.status_code != 200:
            return
        for sse in self._source.iter_sse():
            message = Message(sse.event or "message", sse.data, sse.id or None)
            if message.id is not None:
                self.last_id = message.id
            yield message

    def close(self) -> None:
        self._connection.__exit__(None, None, None)
        self._client.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
