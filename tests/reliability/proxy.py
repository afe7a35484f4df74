"""A fault-injecting HTTP proxy between workers and the AWS emulator (loopback only).

Workers get ``AWS_ENDPOINT_URL`` = ``proxy.url`` (``Settings.through``); every request
they send crosses this proxy, which parses it just enough to know its service and
operation (the ``X-Amz-Target`` header of the JSON protocol DynamoDB, SQS and EventBridge
all use), forwards it to that service's emulator (SQS and EventBridge on LocalStack,
DynamoDB on moto, or all on moto) and, as the test
decides: forwards it, forwards it late, answers it with AWS throttling or a 5xx in the
exact shape botocore parses, resets the connection, holds it until released, black-holes
it, or refuses connections altogether. The clients are the real aiobotocore ones, with
their real retries: nothing is patched.

The proxy runs its own event loop in a daemon thread, so it serves in-process workers
(on the test's loop) and ``wait-times run`` child processes alike. Its control methods
are plain methods, safe to call from the test thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import random
import socket
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"

# Error answers per service, in the JSON protocol botocore speaks to each of them.
# SQS's JSON protocol is "query compatible": the x-amzn-query-error header carries the
# legacy error code, which botocore reports as the error's Code.
_JSON_TYPES = {
    "dynamodb": "application/x-amz-json-1.0",
    "sqs": "application/x-amz-json-1.0",
    "events": "application/x-amz-json-1.1",
}
_THROTTLE = {
    "dynamodb": ("com.amazonaws.dynamodb.v20120810#ThrottlingException", None),
    "sqs": ("com.amazonaws.sqs#RequestThrottled", "RequestThrottled;Sender"),
    "events": ("ThrottlingException", None),
}
_SERVER_ERRORS = {
    "dynamodb": (
        (500, "com.amazonaws.dynamodb.v20120810#InternalServerError", None),
        (503, "com.amazonaws.dynamodb.v20120810#ServiceUnavailable", None),
    ),
    "sqs": (
        (500, "com.amazonaws.sqs#InternalError", "InternalError;Receiver"),
        (503, "com.amazonaws.sqs#ServiceUnavailable", "ServiceUnavailable;Receiver"),
    ),
    "events": (
        (500, "InternalException", None),
        (503, "ServiceUnavailableException", None),
    ),
}
_SERVICES = {"DynamoDB": "dynamodb", "AmazonSQS": "sqs", "AWSEvents": "events"}


def _loopback_port(url: str) -> int:
    host_port = url.rsplit("/", 1)[-1] if "://" in url else url
    host, _, port = host_port.rpartition(":")
    if host not in (LOOPBACK, "localhost"):
        raise ValueError(f"the proxy only forwards to loopback, not {host!r}")
    return int(port)


@dataclass
class Faults:
    """What to do to requests; rates are fractions of the requests of ``operations``."""

    throttle_rate: float = 0.0
    error_rate: float = 0.0
    reset_rate: float = 0.0
    latency: float = 0.0
    latency_rate: float = 1.0
    operations: frozenset[str] | None = None  # None: every operation
    latency_operations: frozenset[str] | None = None
    # Deterministic schedules, for assertions that must not depend on the dice: every
    # ``fault_every``-th request of ``operations`` is faulted, throttled and 5xx in turn;
    # the first ``latency_first`` requests of ``latency_first_operations`` are delayed, then
    # every ``latency_every``-th other request of ``latency_operations`` (instead of the rate).
    fault_every: int = 0
    latency_first: int = 0
    latency_first_operations: frozenset[str] = frozenset()
    latency_every: int = 0


@dataclass
class _Request:
    head: bytes
    body: bytes
    service: str
    operation: str


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    upstream_port: int = 0
    pump: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    """The proxy. ``start()`` binds a free loopback port that it keeps for its lifetime."""

    def __init__(self, upstream: str | Mapping[str, str], *, seed: int = 0) -> None:
        """``upstream``: one endpoint URL, or one per service (``sqs``, ``events``,
        ``dynamodb``: ``Cloud.urls``)."""
        urls = {"other": upstream} if isinstance(upstream, str) else dict(upstream)
        urls.setdefault("other", next(iter(urls.values())))
        self.upstream_ports = {service: _loopback_port(url) for service, url in urls.items()}
        self.port = 0
        self.rng = random.Random(seed)
        self.faults = Faults()
        self._fault_counts: Counter[str] = Counter()
        self.injected: Counter[tuple[str, str]] = Counter()  # (kind, operation) → count
        self.forwarded: Counter[str] = Counter()  # operation → count
        self.held: Counter[str] = Counter()  # operation → requests being held now
        self._holds: dict[str, int] = {}  # operation → requests to let through first
        self._drop_held = False
        self._blackholed = False
        self._refusing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._restored: asyncio.Event | None = None
        self._released: asyncio.Event | None = None
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()

    # -- lifecycle (test thread) --------------------------------------------------------

    @property
    def url(self) -> str:
        """The endpoint to give workers."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> FaultProxy:
        """Start the proxy thread and bind the port."""
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._restored = asyncio.Event()
            self._restored.set()
            self._released = asyncio.Event()
            self._released.set()
            loop.run_until_complete(self._listen())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        """Stop serving and close every connection."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro_fn: object) -> None:
        assert self._loop is not None
        future: concurrent.futures.Future[object] = asyncio.run_coroutine_threadsafe(
            coro_fn,  # type: ignore[arg-type]
            self._loop,
        )
        future.result(10)

    # -- control (test thread) ----------------------------------------------------------

    def configure(self, **faults: object) -> None:
        """Replace the fault rates (see ``Faults``); ``configure()`` clears them."""
        self.faults = Faults(**faults)  # type: ignore[arg-type]
        self._fault_counts = Counter()

    def scheduled(self, schedule: str) -> int:
        """Requests a schedule ("faulted", "delayed", "first") has counted since configure."""
        return self._fault_counts[schedule]

    def blackhole(self) -> None:
        """From now on requests get no answer, and answers in flight are dropped."""
        self._call(self._set_blackhole(True))

    def refuse(self) -> None:
        """Close the listening socket (connection refused) and reset open connections."""
        self._call(self._set_refusing(True))

    def restore(self) -> None:
        """Back to normal: listening, forwarding; held-in-the-hole requests are reset."""
        self._call(self._set_refusing(False))
        self._call(self._set_blackhole(False))

    def hold(self, operation: str, *, after: int = 0) -> None:
        """Hold requests of ``operation`` (after letting ``after`` through) until released."""
        with self._lock:
            self._holds[operation] = after
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._released_clear)

    def release(self, *, drop: bool = False) -> None:
        """Stop holding; held requests are forwarded late (their sender may be dead by
        then, as with a request already on the wire at a crash), or reset with ``drop``."""
        with self._lock:
            self._holds.clear()
            self._drop_held = drop
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._released_set)

    def injected_total(self, kind: str) -> int:
        """How many requests got fault ``kind`` so far."""
        return sum(n for (k, _), n in self.injected.items() if k == kind)

    # -- inside the proxy loop ----------------------------------------------------------

    def _released_clear(self) -> None:
        assert self._released is not None
        self._released.clear()

    def _released_set(self) -> None:
        assert self._released is not None
        self._released.set()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, LOOPBACK, self.port, reuse_address=True, backlog=256
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _set_blackhole(self, on: bool) -> None:
        assert self._restored is not None
        self._blackholed = on
        if on:
            self._restored.clear()
        else:
            self._restored.set()

    async def _set_refusing(self, on: bool) -> None:
        if on and not self._refusing:
            self._refusing = True
            if self._server is not None:
                self._server.close()
                self._server = None
            await self._close_all()
        elif not on and self._refusing:
            self._refusing = False
            await self._listen()

    async def _shutdown(self) -> None:
        assert self._restored is not None and self._released is not None
        if self._server is not None:
            self._server.close()
            self._server = None
        self._restored.set()
        self._released.set()
        await self._close_all()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.05)  # let aborted transports close their sockets

    async def _close_all(self) -> None:
        for connection in list(self._connections):
            self._reset(connection)

    def _reset(self, connection: _Connection) -> None:
        """Abort with an RST, as a crashed or unreachable server would."""
        self._connections.discard(connection)
        for writer in (connection.writer, connection.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        if connection.pump is not None:
            connection.pump.cancel()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer)
        self._connections.add(connection)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                if not await self._handle(request, connection):
                    return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            if connection in self._connections:
                self._connections.discard(connection)
                for w in (connection.writer, connection.upstream):
                    if w is not None:
                        w.close()
                if connection.pump is not None:
                    connection.pump.cancel()

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            raise OSError("chunked requests are not supported by the fault proxy")
        length = int(headers.get(b"content-length", b"0"))
        body = await reader.readexactly(length) if length else b""
        target = headers.get(b"x-amz-target", b"").decode()
        prefix, _, operation = target.partition(".")
        service = _SERVICES.get(prefix.split("_", 1)[0], "other")
        return _Request(head, body, service, operation or "other")

    async def _handle(self, request: _Request, connection: _Connection) -> bool:
        """Deal with one request; False ends the connection."""
        assert self._restored is not None and self._released is not None
        operation = request.operation
        if self._blackholed:
            self.injected["blackholed", operation] += 1
            await self._restored.wait()
            self._reset(connection)
            return False
        if self._should_hold(operation):
            self.held[operation] += 1
            self.injected["held", operation] += 1
            try:
                await self._released.wait()
            finally:
                self.held[operation] -= 1
            if self._drop_held:
                self._reset(connection)
                return False
        faults = self.faults
        if faults.latency and self._is_delayed(operation):
            self.injected["delayed", operation] += 1
            await asyncio.sleep(faults.latency)
        if faults.fault_every and self._applies(faults.operations, operation):
            self._fault_counts["faulted"] += 1
            turn, rest = divmod(self._fault_counts["faulted"], faults.fault_every)
            if rest == 0 and turn % 2:
                self.injected["throttled", operation] += 1
                await self._answer_throttle(request, connection.writer)
                return True
            if rest == 0:
                self.injected["5xx", operation] += 1
                await self._answer_server_error(request, connection.writer)
                return True
        elif self._applies(faults.operations, operation):
            roll = self.rng.random()
            if roll < faults.throttle_rate:
                self.injected["throttled", operation] += 1
                await self._answer_throttle(request, connection.writer)
                return True
            roll -= faults.throttle_rate
            if roll < faults.error_rate:
                self.injected["5xx", operation] += 1
                await self._answer_server_error(request, connection.writer)
                return True
            roll -= faults.error_rate
            if roll < faults.reset_rate:
                self.injected["reset", operation] += 1
                self._reset(connection)
                return False
        if self._blackholed:
            await self._restored.wait()
            self._reset(connection)
            return False
        port = self.upstream_ports.get(request.service, self.upstream_ports["other"])
        if connection.upstream is None:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, port)
            connection.upstream, connection.upstream_port = up_writer, port
            connection.pump = asyncio.create_task(self._pump(up_reader, connection))
        elif connection.upstream_port != port:
            # botocore keeps one connection pool per client, so one service per connection.
            raise OSError("requests for two services on one connection")
        self.forwarded[operation] += 1
        connection.upstream.write(request.head + request.body)
        await connection.upstream.drain()
        return True

    def _is_delayed(self, operation: str) -> bool:
        faults = self.faults
        counts = self._fault_counts
        if operation in faults.latency_first_operations and counts["first"] < faults.latency_first:
            counts["first"] += 1
            return True
        if not self._applies(faults.latency_operations, operation):
            return False
        counts["delayed"] += 1
        if faults.latency_every:
            return counts["delayed"] % faults.latency_every == 0
        return self.rng.random() < faults.latency_rate

    def _should_hold(self, operation: str) -> bool:
        with self._lock:
            if operation not in self._holds:
                return False
            if self._holds[operation] > 0:
                self._holds[operation] -= 1
                return False
            return True

    @staticmethod
    def _applies(operations: frozenset[str] | None, operation: str) -> bool:
        return operations is None or operation in operations

    async def _pump(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        """Upstream answers back to the client; dropped while black-holed."""
        assert self._restored is not None
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                if self._blackholed:
                    await self._restored.wait()
                    self._reset(connection)
                    return
                connection.writer.write(chunk)
                await connection.writer.drain()
        except OSError:
            pass
        with contextlib.suppress(OSError):
            connection.writer.close()

    async def _answer_throttle(self, request: _Request, writer: asyncio.StreamWriter) -> None:
        service = request.service if request.service in _THROTTLE else "dynamodb"
        error_type, query_error = _THROTTLE[service]
        await self._answer(writer, 400, service, error_type, query_error, "Rate exceeded")

    async def _answer_server_error(self, request: _Request, writer: asyncio.StreamWriter) -> None:
        service = request.service if request.service in _SERVER_ERRORS else "dynamodb"
        status, error_type, query_error = self.rng.choice(_SERVER_ERRORS[service])
        await self._answer(writer, status, service, error_type, query_error, "injected failure")

    @staticmethod
    async def _answer(
        writer: asyncio.StreamWriter,
        status: int,
        service: str,
        error_type: str,
        query_error: str | None,
        message: str,
    ) -> None:
        body = json.dumps({"__type": error_type, "message": message}).encode()
        reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}
        lines = [
            f"HTTP/1.1 {status} {reason[status]}",
            f"Content-Type: {_JSON_TYPES[service]}",
            f"Content-Length: {len(body)}",
            f"x-amzn-RequestId: {uuid.uuid4()}",
        ]
        if query_error:
            lines.append(f"x-amzn-query-error: {query_error}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
