"""The one retry loop (``service.retry.until_done``), as the worker and the board run it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import pytest
from structlog.testing import capture_logs

import service.retry
from service.backoff import Backoff
from service.board.feed import Board, consume
from service.board.state import BoardState
from service.board.streams import Streams
from service.errors import DependencyError, MissingResourceError, WaitTimesError
from service.ports import Message
from service.retry import FlushAbandoned, until_done

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service.retry, "DEPENDENCY_RETRY", Backoff(base=0.001, cap=0.001))


class Seen:
    """A RetryObserver that records what it heard."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []

    def retrying(self, stage: str, error: WaitTimesError) -> None:
        self.heard.append(("retrying", stage))

    def dependencies_ok(self) -> None:
        self.heard.append(("ok", ""))


def failing(errors: Sequence[WaitTimesError], answer: str = "done") -> Callable[[], Awaitable[str]]:
    """A step that raises ``errors`` in turn, then answers."""
    left = list(errors)

    async def step() -> str:
        if left:
            raise left.pop(0)
        return answer

    return step


THROTTLED = DependencyError("throttled", operation="sqs.ReceiveMessage", code="Throttling")


async def test_a_retriable_failure_is_tried_again_until_it_answers() -> None:
    seen = Seen()
    with capture_logs() as logs:
        assert await until_done("receive", failing([THROTTLED, THROTTLED]), seen) == "done"
    assert seen.heard == [("retrying", "receive"), ("retrying", "receive"), ("ok", "")]
    retries = [e for e in logs if e["event"] == "dependency_retry"]
    assert [(e["step"], e["attempt"]) for e in retries] == [("receive", 1), ("receive", 2)]


async def test_a_first_answer_reports_nothing() -> None:
    seen = Seen()
    assert await until_done("receive", failing([]), seen) == "done"
    assert seen.heard == []


async def test_a_non_retriable_failure_propagates_at_once() -> None:
    seen = Seen()
    refused = DependencyError("bad", code="ValidationException", retriable=False)
    with pytest.raises(DependencyError) as raised:
        await until_done("commit", failing([refused]), seen)
    assert raised.value is refused
    assert seen.heard == []
    with pytest.raises(MissingResourceError):
        await until_done("startup", failing([MissingResourceError("no queue")]), seen)


async def test_once_stopping_a_failure_abandons_the_step() -> None:
    seen = Seen()
    with pytest.raises(FlushAbandoned):
        await until_done("apply", failing([THROTTLED]), seen, stopping=lambda: True)
    assert seen.heard == [("retrying", "apply")]


async def test_an_unreachable_endpoint_is_logged_as_such() -> None:
    down = DependencyError("refused", code="EndpointConnectionError", unreachable=True)
    with capture_logs() as logs:
        await until_done("startup", failing([down]))
    assert [e["event"] for e in logs] == ["aws_unreachable"]


class FlakyQueue:
    """The board's queue: one receive throttled, then one malformed message, then refused."""

    def __init__(self) -> None:
        self.answers: list[WaitTimesError | list[Message]] = [
            THROTTLED,
            [Message("m1", "r1", "{broken", 1)],
            DependencyError("gone", code="AccessDenied", retriable=False),
        ]
        self.released: list[str] = []

    async def receive(self, wait_seconds: float | None = None) -> list[Message]:
        answer = self.answers.pop(0)
        if isinstance(answer, WaitTimesError):
            raise answer
        return answer

    async def delete(self, messages: Sequence[Message]) -> None:
        raise AssertionError("nothing readable to delete")

    async def change_visibility(self, messages: Sequence[Message], seconds: int) -> None:
        self.released += [m.message_id for m in messages]


async def test_the_board_waits_out_a_retriable_receive_and_stops_on_any_other() -> None:
    queue = FlakyQueue()
    board = Board(BoardState(10), Streams(1))
    with capture_logs() as logs, pytest.raises(DependencyError, match="gone"):
        await consume(queue, board, redrive_limit=1)  # type: ignore[arg-type]
    assert queue.answers == []
    assert queue.released == ["m1"]
    retries = [e for e in logs if e["event"] == "dependency_retry"]
    assert [(e["step"], e["attempt"]) for e in retries] == [("board.receive", 1)]
