"""What the core knows of an order's events: their role and the fields the window needs.

The parsing of raw envelopes into these is ``service.core.consumed``; pairing and windows
(``service.core.pairing``, ``service.core.window``) work on these alone.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class Role(StrEnum):
    """What an event means for an order's wait."""

    SUBMITTED = "submitted"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class OrderEvent(NamedTuple):
    """One half (or the cancellation) of an order, reduced to what the window needs.

    A NamedTuple rather than a frozen dataclass: as immutable, and several times cheaper
    to build on replay's hot path.
    """

    role: Role
    order_id: str
    time: int  # epoch seconds, from the envelope so both halves share one clock
    tenant: str = ""
    drink: str | None = None
    event_id: str = ""
