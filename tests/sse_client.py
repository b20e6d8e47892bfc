"""A minimal Server-Sent Events reader over `requests`, for the tests and benchmarks (the
product itself reads no SSE: the browser's page polls JSON).

It parses the wire format (`id:`, `event:`, `data:`, `retry:`, comment lines) into messages
and remembers the last id, so a caller can reconnect with `Last-Event-ID` the way a browser's
EventSource does. (httpx-sse could replace it; not done yet.)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class Message:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


def parse(lines: Iterable[str]) -> Iterator[Message]:
    """Messages from the stream's lines; comment-only blocks come out as Message(event='')."""
    event, msg_id = "", None
    data: list[str] = []
    comments: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r")
        if line == "":
            if data:
                yield Message(event or "message", "\n".join(data), msg_id, comments)
            elif comments:
                yield Message("", "", None, comments)
            event, msg_id, data, comments = "", None, [], []
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            msg_id = value


class EventStream:
    """One connection to an SSE endpoint; iterate it for messages (pings included)."""

    def __init__(
        self,
        url: str,
        last_event_id: int | str | None = None,
        headers: dict[str, str] | None = None,
        timeout: tuple[float, float] = (5.0, 60.0),
        session: requests.Session | None = None,
    ) -> None:
        hdrs = {"Accept": "text/event-stream", **(headers or {})}
        if last_event_id is not None:
            hdrs["Last-Event-ID"] = str(last_event_id)
        self.response = (session or requests).get(url, headers=hdrs, stream=True, timeout=timeout)
        self.status_code = self.response.status_code
        self.last_id: str | None = None

    def __iter__(self) -> Iterator[Message]:
        if self.status_code != 200:
            return
        # chunk_size None: each line as soon as it arrives (requests types it as an int).
        lines = self.response.iter_lines(chunk_size=None, decode_unicode=True)  # type: ignore[call-overload]
        for message in parse(lines):
            if message.id is not None:
                self.last_id = message.id
            yield message

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
