"""The board's live streams: one per browser, woken when what it shows changed, bounded."""

from __future__ import annotations

import asyncio


class Stream:
    """One browser's live stream: told when its tenant's view (or the tenant list) changed."""

    __slots__ = ("changed", "tenant")

    def __init__(self, tenant: str | None) -> None:
        self.tenant = tenant  # None: the index page, which shows the tenant list only
        self.changed = asyncio.Event()


class Streams:
    """The open live streams, at most ``limit`` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: set[Stream] = set()
        self.closing = False

    def __len__(self) -> int:
        return len(self._open)

    def open(self, tenant: str | None) -> Stream | None:
        """A new stream, or None when ``limit`` are open already (or the board is stopping)."""
        if self.closing or len(self._open) >= self.limit:
            return None
        stream = Stream(tenant)
        self._open.add(stream)
        return stream

    def close(self, stream: Stream) -> None:
        """Forget a stream whose browser went away."""
        self._open.discard(stream)

    def notify(self, tenant: str, *, everyone: bool = False) -> None:
        """Wake the streams of ``tenant`` (``everyone``: the tenant list changed)."""
        for stream in self._open:
            if everyone or stream.tenant == tenant:
                stream.changed.set()

    def close_all(self) -> None:
        """Stopping: refuse new streams and wake every open one, so each ends."""
        self.closing = True
        for stream in self._open:
            stream.changed.set()
