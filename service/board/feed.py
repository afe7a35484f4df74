"""The board's feed: its own queue's messages into ``BoardState``, and the live streams
told of each change.

A message is an EventBridge envelope of ``OrderManager.DrinkAverageTime`` or
``OrderManager.WaitEstimate`` (the board's rule matches only those). Every readable one is
deleted once taken, kept or stale. A malformed one is poison, treated as the worker treats
poison (``service.flush``): made visible again at once so the redrive policy moves it to
the board's dead-letter queue after ``maxReceiveCount`` receives, counted, and logged on
one line on the receive that sends it there (``service.ports.final_poison``, the worker's
own rule). Nothing good in the same receive waits for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from service.board.state import BoardState, TakeResult, read_published
from service.board.streams import Streams
from service.core.published import Published
from service.errors import PoisonMessageError, WaitTimesError
from service.ports import Message, OrderQueue, final_poison
from service.retry import until_done

log = structlog.get_logger(__name__)

IGNORED = "ignored"  # another detail-type: nothing for the board
MALFORMED = "malformed"  # can never be read: left to the redrive policy


@dataclass
class Sorted:
    """A receive, sorted: the messages to delete and the malformed ones to release."""

    done: list[Message] = field(default_factory=list)
    malformed: list[tuple[Message, PoisonMessageError]] = field(default_factory=list)


class Board:
    """The board's state, its live streams and its counters, fed message by message."""

    def __init__(self, state: BoardState, streams: Streams) -> None:
        self.state = state
        self.streams = streams
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "wait_times_board_messages",
            "Messages of the board's queue, by what became of them",
            ["outcome"],
            registry=self.registry,
        )
        self.open_streams = Gauge(
            "wait_times_board_streams", "Live streams open now", registry=self.registry
        )
        self.open_streams.set_function(lambda: len(self.streams))

    def take_values(self, values: Iterable[Published], *, messages: bool = True) -> None:
        """Take published values: the queue's (counted as messages by outcome), or the
        table's at start (``messages=False``)."""
        for value in values:
            taken = self.state.take(value)
            if messages:
                self.messages.labels(taken.result.value).inc()
            if taken.result is TakeResult.KEPT:
                self.streams.notify(taken.tenant, everyone=taken.new_tenant)

    def take(self, messages: Sequence[Message], redrive_limit: int | None) -> Sorted:
        """Read and take a receive's messages; says which to delete and which to release."""
        found = Sorted()
        for message in messages:
            try:
                value = read_published(message.body)
            except PoisonMessageError as exc:
                found.malformed.append((message, exc))
                self.messages.labels(MALFORMED).inc()
                continue
            if value is None:
                self.messages.labels(IGNORED).inc()
            else:
                self.take_values([value])
            found.done.append(message)
        # One line per message, on the receive after which the redrive policy moves it.
        for message, error in final_poison(found.malformed, redrive_limit):
            log.error(
                "board_message_malformed",
                message_id=message.message_id,
                reason=error.reason,
                detail=error.detail,
                receive_count=message.receive_count,
                dead_letter=redrive_limit is not None,
            )
        return found


async def consume(queue: OrderQueue, board: Board, redrive_limit: int | None) -> None:
    """Receive from the board's queue until cancelled, each receive through the service's
    one retry loop (``until_done``)."""
    while True:
        messages = await until_done("board.receive", queue.receive)
        found = board.take(messages, redrive_limit)
        await _settle(queue, found, release=redrive_limit is not None)


async def _settle(queue: OrderQueue, found: Sorted, *, release: bool) -> None:
    """Delete what was taken, release what is malformed (at once towards the DLQ; without
    one, it returns after the visibility timeout, so it cannot spin); a failure here only
    means a redelivery, which the highest-version rule makes harmless."""
    try:
        if found.done:
            await queue.delete(found.done)
        if found.malformed and release:
            await queue.change_visibility([m for m, _ in found.malformed], 0)
    except WaitTimesError as exc:
        log.warning("board_settle_failed", error=str(exc)[:300])
