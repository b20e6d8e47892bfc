"""Wakes SSE streams when new events land in the store.

Events are written by other processes (the workers), so nothing inside the server learns of
them by itself. One task polls the newest event id every `poll_s` seconds and wakes every
waiting stream at once; with any number of clients the database sees one tiny query per poll
instead of one per client.

No wake-up is lost: a stream reads `latest` *before* it queries its events and then waits for
`latest` to move past that value; an event committed after the query has a larger id than
anything the poller had seen, so the next poll wakes the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import anyio.to_thread

from backend.store import Store

log = logging.getLogger("protoscope.broker")


class EventBroker:
    def __init__(self, store: Store, poll_s: float) -> None:
        self.store = store
        self.poll_s = poll_s
        self._latest = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def latest(self) -> int:
        """The newest event id the poller has seen."""
        return self._latest

    async def start(self) -> None:
        self._latest = await anyio.to_thread.run_sync(self.store.max_event_id)
        self._task = asyncio.create_task(self._poll(), name="event-broker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            try:
                latest = await anyio.to_thread.run_sync(self.store.max_event_id)
            except Exception:  # a busy or briefly unreadable database: try again next time
                log.exception("polling the event log")
                latest = self._latest
            if latest != self._latest:
                self._latest = latest
                # Swap in a fresh Event first, then set the old one: every current waiter
                # wakes, and later waiters wait for the next change.
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()
            await asyncio.sleep(self.poll_s)

    async def wait_newer(self, seen: int, timeout: float) -> bool:
        """Wait until an event newer than `seen` exists; False after `timeout` seconds."""
        if self._latest > seen:
            return True
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return False
        return True
