"""3. Latency: a completion's PutEvents to its DrinkAverageTime on a capture queue.

Entry point: ``run(report)`` is a plain (synchronous) function; it starts its own event loop
with ``anyio.run``, prints as it goes and fills ``report["latency"]``. Run alone:
``python -m bench.latency [ORDERS]``.

What is measured, in one run against one moto server child process:

* ``bare``: the emulator's own round trip. The bench puts an event the capture rule
  matches (a DrinkAverageTime-shaped event) and times it until the bench's long poll on
  the capture queue hands it back: PutEvents -> rule -> SQS -> receive.
* ``worker``: a real ``wait-times run`` process (``WAIT_TIMES_RECEIVE_WAIT_SECONDS=20``,
  the production long poll). Every order's submission is put first and the bench waits
  until the worker's /metrics say it was processed; then each completion is timed alone,
  from the start of its PutEvents to the arrival of the average it causes on the capture
  queue. Bare probes and completions alternate, so both see the same emulator.
* ``breakdown``: the same measurement with the worker in this process, every AWS call
  of the worker timestamped through botocore's event hooks, to say where the time goes.

The bench's receiver takes messages with a 12 h visibility timeout and deletes them
between measurements, so no extra request sits between an arrival and the next long poll
and the capture queue stays short (moto scans a queue's whole list on every receive and
delete: a queue left to grow slows every request down).

The helpers it shares with the other parts (worker environment, /proc CPU times, figures)
are in ``bench.common``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel

from bench.common import (
    bench_settings,
    cpu_seconds,
    dummy_credentials,
    envelope_time,
    free_port,
    load_average,
    percentile,
    print_machine,
    quiet_logs,
    scrape,
    spawn,
    summary_ms,
    wait_processed,
    wait_ready,
    wait_times_command,
    worker_env,
)
from service.aws.clients import AwsClients, open_clients
from service.aws.provision import ensure_queue, ensure_rule, provision

# bench.compare carries this module into older trees, whose events were one module.
try:
    from service.core.consumed import SUBMITTED_DETAIL_TYPE
    from service.core.published import AVERAGE_DETAIL_TYPE, ESTIMATE_DETAIL_TYPE
except ImportError:
    from service.core.events import (  # type: ignore[import-untyped,no-redef]
        AVERAGE_DETAIL_TYPE,
        ESTIMATE_DETAIL_TYPE,
        SUBMITTED_DETAIL_TYPE,
    )
from service.settings import DEFAULT_SOURCE, Settings
from service.tools.emulator import Emulator
from service.tools.player import MENU, put_entries

TARGET_RATIO = 1.5
TARGET_OVER_FORWARDER = 1.15  # issue 20: for the average and the WaitEstimate alike
WARMUP_ORDERS = 16  # one cache-filling GetItem per key; not counted
CAPTURE_VISIBILITY = 43_200
FORWARD_DETAIL_TYPE = "Bench.Forward"
SPACING_SECONDS = 12  # 516 orders in 1 h 43 min; a drink's orders 96 s apart


# -- the latency bench -----------------------------------------------------------------


@dataclass
class Order:
    order_id: str
    tenant: str
    drink: str
    submitted: int
    completed: int

    def submission(self, bus: str) -> Any:
        detail = {
            "orderId": self.order_id,
            "userId": "bench",
            "eventId": self.tenant,
            "orderNumber": "1",
            "state": f"{self.tenant}-CREATED",
            "drinkOrder": {"drink": self.drink, "modifiers": [], "icon": "barista-icons"},
            "robot": False,
            "TS": self.submitted * 1000,
        }
        return _entry(bus, SUBMITTED_DETAIL_TYPE, detail, self.submitted)

    def completion(self, bus: str) -> Any:
        detail = {
            "orderId": self.order_id,
            "userId": "bench",
            "eventId": self.tenant,
            "ORDERSTATE": f"{self.tenant}-COMPLETED",
            "Message": "completed",
        }
        return _entry(bus, f"OrderManager.Order{self.tenant}-COMPLETED", detail, self.completed)


def _entry(bus: str, detail_type: str, detail: dict[str, Any], at: int) -> Any:
    return {
        "EventBusName": bus,
        "Source": DEFAULT_SOURCE,
        "DetailType": detail_type,
        "Detail": json.dumps(detail),
        "Time": envelope_time(at),
    }


def plan_orders(tenant: str, count: int, base: int) -> list[Order]:
    """Orders over the menu's drinks, completions strictly later one after the other per drink.

    Envelope times are synthetic (in the past, SPACING_SECONDS apart, so all of them fit in
    the default maximum wait of 2 h): every completion enters its key's window, so each one
    changes the window and causes one average, and every completed order was open at the
    tenant's latest event, so each completion changes ``openOrders`` and causes one
    ``WaitEstimate``.
    """
    drinks = list(MENU)
    orders = []
    for i in range(count):
        submitted = base + SPACING_SECONDS * i
        orders.append(
            Order(
                str(uuid.uuid4()),
                tenant,
                drinks[i % len(drinks)],
                submitted,
                submitted + 90 + (i * 7) % 30,
            )
        )
    return orders


class Capture:
    """Long-polls the capture queue and timestamps each arrival; one expectation at a time."""

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs = sqs
        self.url = url
        self._key: tuple[str, str] | None = None
        self._event = anyio.Event()
        self._estimate = anyio.Event()
        self.arrived_at = 0.0
        self.estimate_at = 0.0
        self.detail: dict[str, Any] = {}
        self.unexpected = 0
        self.receives = 0
        self.put_calls: list[float] = []  # the bare probes' PutEvents call alone
        self._handles: list[str] = []

    def expect(self, key: tuple[str, str]) -> None:
        self._key = key
        self._event = anyio.Event()
        self._estimate = anyio.Event()

    async def estimate_arrival(self, within: float = 30) -> float:
        """When the expected tenant's first ``WaitEstimate`` since ``expect`` arrived."""
        with anyio.fail_after(within):
            await self._estimate.wait()
        return self.estimate_at

    async def arrival(self, within: float = 30) -> float:
        with anyio.fail_after(within):
            await self._event.wait()
        return self.arrived_at

    async def purge(self) -> None:
        """Delete what arrived, between measurements (untimed).

        moto scans a queue's whole message list on every receive and delete, so letting
        arrivals pile up would slow the emulator down as the run goes on.
        """
        handles, self._handles = self._handles, []
        for start in range(0, len(handles), 10):
            await self.sqs.delete_message_batch(
                QueueUrl=self.url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h}
                    for i, h in enumerate(handles[start : start + 10])
                ],
            )

    async def loop(self) -> None:
        while True:
            response = await self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=20,
                VisibilityTimeout=CAPTURE_VISIBILITY,
            )
            now = time.perf_counter()
            self.receives += 1
            for message in response.get("Messages", []):
                self._handles.append(message["ReceiptHandle"])
                body = json.loads(message["Body"])
                detail = body.get("detail", {})
                key = (detail.get("eventId"), detail.get("drink"))
                if (
                    body.get("detail-type") == ESTIMATE_DETAIL_TYPE
                    and self._key is not None
                    and detail.get("eventId") == self._key[0]
                    and not self._estimate.is_set()
                ):
                    self.estimate_at = now
                    self._estimate.set()
                elif key == self._key and not self._event.is_set():
                    self.arrived_at = now
                    self.detail = detail
                    self._event.set()
                else:
                    self.unexpected += 1


async def _time_probe(
    clients: AwsClients, capture: Capture, bus: str, index: int, tenant: str, detail_type: str
) -> tuple[float, float]:
    """PutEvents of a probe average -> its arrival on the capture queue, and the PutEvents
    call alone, in seconds."""
    key = (tenant, f"probe-{index}")
    capture.expect(key)
    detail = {"eventId": key[0], "drink": key[1], "duration": 1.0, "samples": 1, "version": index}
    started = time.perf_counter()
    await put_entries(clients.events, [_entry(bus, detail_type, detail, int(time.time()))])
    put_call = time.perf_counter() - started
    return await capture.arrival() - started, put_call


async def time_bare(clients: AwsClients, capture: Capture, bus: str, index: int) -> float:
    """An event the capture rule matches -> its arrival on the capture queue."""
    arrival, put_call = await _time_probe(clients, capture, bus, index, "BARE", AVERAGE_DETAIL_TYPE)
    capture.put_calls.append(put_call)
    return arrival


async def time_completion(
    clients: AwsClients, capture: Capture, bus: str, order: Order
) -> tuple[float, float]:
    """(start of the completion's PutEvents, arrival of the average it causes)."""
    started, arrived, _ = await time_completion_and_estimate(clients, capture, bus, order)
    return started, arrived


async def time_completion_and_estimate(
    clients: AwsClients, capture: Capture, bus: str, order: Order
) -> tuple[float, float, float]:
    """(start of the completion's PutEvents, arrival of the average it causes, arrival of
    the tenant's ``WaitEstimate`` it causes: its open orders fall by one)."""
    capture.expect((order.tenant, order.drink))
    started = time.perf_counter()
    await put_entries(clients.events, [order.completion(bus)])
    arrived = await capture.arrival()
    if capture.detail.get("samples", 0) < 1:
        raise RuntimeError(f"unexpected average {capture.detail}")
    return started, arrived, await capture.estimate_arrival()


class Forwarder:
    """A consumer that does nothing: each message on its queue becomes one PutEvents entry.

    Its round trip (bus -> queue -> receive -> PutEvents -> bus -> capture queue -> receive)
    is the floor of any consumer that answers on the bus: two of the bare hops.
    """

    def __init__(self, clients: AwsClients, url: str, bus: str) -> None:
        self.clients = clients
        self.url = url
        self.bus = bus

    async def loop(self) -> None:
        while True:
            response = await self.clients.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=20,
                VisibilityTimeout=CAPTURE_VISIBILITY,
            )
            messages = response.get("Messages", [])
            entries: list[Any] = [
                _entry(self.bus, AVERAGE_DETAIL_TYPE, json.loads(m["Body"])["detail"], 0)
                for m in messages
            ]
            if entries:
                for entry in entries:
                    entry["Time"] = envelope_time(int(time.time()))
                await self.clients.events.put_events(Entries=entries)
                # Like the worker: delete only after publishing (off the latency path).
                await self.clients.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )


async def time_forward(clients: AwsClients, capture: Capture, bus: str, index: int) -> float:
    """A probe the forwarder's rule matches -> the forwarded copy on capture."""
    arrival, _ = await _time_probe(clients, capture, bus, index, "FWD", FORWARD_DETAIL_TYPE)
    return arrival


async def _prepare(
    settings: Settings, stack: AsyncExitStack
) -> tuple[AwsClients, Capture, anyio.abc.TaskGroup]:
    clients = await open_clients(settings, stack)
    # Queues per phase: a cancelled long poll lingers in moto for up to 20 s and would
    # swallow the next phase's first arrival.
    provisioned = await provision(settings, clients, capture_queue=f"{settings.queue_name}-capture")
    assert provisioned.capture_queue_url is not None
    capture = Capture(clients.sqs, provisioned.capture_queue_url)
    forward_url, forward_arn = await ensure_queue(clients.sqs, f"{settings.queue_name}-forward", {})
    await ensure_rule(
        clients,
        settings.event_bus,
        f"{settings.queue_name}-forward",
        {"source": [DEFAULT_SOURCE], "detail-type": [FORWARD_DETAIL_TYPE]},
        forward_arn,
        forward_url,
    )
    group = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(group.cancel_scope.cancel)
    group.start_soon(capture.loop)
    group.start_soon(Forwarder(clients, forward_url, settings.event_bus).loop)
    return clients, capture, group


async def measure_real_process(settings: Settings, orders_count: int) -> dict[str, Any]:
    """Headline figures: a real ``wait-times run`` process, measured from outside."""
    port = settings.metrics_port
    async with AsyncExitStack() as stack:
        clients, capture, _ = await _prepare(settings, stack)
        process = spawn(wait_times_command("run"), worker_env(settings))
        stack.callback(_terminate, process)
        await wait_ready(port, process)
        total = WARMUP_ORDERS + orders_count
        orders = plan_orders("LAT", total, int(time.time()) - 200_000)
        submitted_at = time.perf_counter()
        await put_entries(clients.events, [o.submission(settings.event_bus) for o in orders])
        await wait_processed(port, total)
        print(
            f"  {total} submissions put and processed in {time.perf_counter() - submitted_at:.1f}s"
        )
        before = await anyio.to_thread.run_sync(scrape, port)
        bare: list[float] = []
        forward: list[float] = []
        worker: list[float] = []
        estimate: list[float] = []
        for i, order in enumerate(orders):
            probe = await time_bare(clients, capture, settings.event_bus, i)
            forwarded = await time_forward(clients, capture, settings.event_bus, i)
            started, arrived, estimated = await time_completion_and_estimate(
                clients, capture, settings.event_bus, order
            )
            await capture.purge()
            if i >= WARMUP_ORDERS:
                bare.append(probe)
                forward.append(forwarded)
                worker.append(arrived - started)
                estimate.append(estimated - started)
        after = await anyio.to_thread.run_sync(scrape, port)
        worker_cpu = cpu_seconds(process.pid)
    calls = {
        name.split("{", 1)[1].rstrip("}"): after[name] - before.get(name, 0)
        for name in after
        if name.startswith("wait_times_aws_calls_total{")
    }
    flushes = after["wait_times_flush_seconds_count"] - before["wait_times_flush_seconds_count"]
    flush_s = after["wait_times_flush_seconds_sum"] - before["wait_times_flush_seconds_sum"]
    return {
        "bare": summary_ms(bare),
        "forwarder": summary_ms(forward),
        "worker": summary_ms(worker),
        "worker_estimate": summary_ms(estimate),
        "ratio_p50": round(percentile(worker, 50) / percentile(bare, 50), 2),
        "forwarder_ratio_p50": round(percentile(forward, 50) / percentile(bare, 50), 2),
        "worker_over_forwarder_p50": round(percentile(worker, 50) / percentile(forward, 50), 2),
        "estimate_over_forwarder_p50": round(percentile(estimate, 50) / percentile(forward, 50), 2),
        "worker_flushes": int(flushes),
        "worker_flush_mean_ms": round(flush_s / max(flushes, 1) * 1000, 2),
        "worker_aws_calls_during_timing": {k: int(v) for k, v in sorted(calls.items()) if v},
        "bare_put_events_call": summary_ms(capture.put_calls[WARMUP_ORDERS:]),
        "worker_cpu_s_total": round(worker_cpu, 2),
        "unexpected_arrivals": capture.unexpected,
    }


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class CallLog:
    """Start and end of every AWS call the in-process worker makes."""

    calls: list[tuple[float, float, str, int]] = field(default_factory=list)
    starts: list[tuple[float, str]] = field(default_factory=list)
    _open: dict[int, tuple[float, str]] = field(default_factory=dict)

    def attach(self, client: Any, service: str) -> None:
        client.meta.events.register("before-call", self._before(service))
        client.meta.events.register("after-call", self._after())

    def _before(self, service: str) -> Callable[..., None]:
        def before(event_name: str = "", context: Any = None, **_: Any) -> None:
            if context is not None:
                op = f"{service}.{event_name.rsplit('.', 1)[-1]}"
                self._open[id(context)] = begun = (time.perf_counter(), op)
                self.starts.append(begun)

        return before

    def _after(self) -> Callable[..., None]:
        def after(context: Any = None, parsed: Any = None, **_: Any) -> None:
            begun = self._open.pop(id(context), None) if context is not None else None
            if begun is not None:
                messages = len(parsed.get("Messages", [])) if isinstance(parsed, dict) else 0
                self.calls.append((begun[0], time.perf_counter(), begun[1], messages))

        return after


async def measure_breakdown(settings: Settings, orders_count: int) -> dict[str, Any]:
    """The worker in this process, each of its AWS calls timestamped: where the time goes."""
    from service.app import run_worker  # noqa: PLC0415
    from service.metrics import Metrics  # noqa: PLC0415

    log = CallLog()
    segments: dict[str, list[float]] = {
        "bus_to_worker_receive": [],
        "worker_before_dynamodb": [],
        "dynamodb_calls": [],
        "worker_between_calls": [],
        "worker_put_events_to_capture_arrival": [],
        "total": [],
    }
    bare: list[float] = []
    async with AsyncExitStack() as stack:
        clients, capture, group = await _prepare(settings, stack)
        metrics = Metrics()
        worker = await group.start(
            lambda task_status: run_worker(
                settings, install_signals=False, metrics=metrics, task_status=task_status
            )
        )
        stack.push_async_callback(_stop_worker, worker)
        log.attach(worker.queue.client, "sqs")
        log.attach(worker.flush.store.client, "dynamodb")
        log.attach(worker.flush.publisher.client, "events")
        total = WARMUP_ORDERS + orders_count
        orders = plan_orders("SPLIT", total, int(time.time()) - 100_000)
        await put_entries(clients.events, [o.submission(settings.event_bus) for o in orders])
        processed = "wait_times_messages_processed_total"
        while metrics.value(processed) < total:  # noqa: ASYNC110 - a counter, not an event
            await anyio.sleep(0.1)
        for i, order in enumerate(orders):
            probe = await time_bare(clients, capture, settings.event_bus, 10_000 + i)
            log.calls.clear()
            log.starts.clear()
            started, arrived = await time_completion(clients, capture, settings.event_bus, order)
            await capture.purge()
            if i < WARMUP_ORDERS:
                continue
            bare.append(probe)
            # The long poll that returns the completion began before it was put.
            received = min(
                end
                for _, end, op, n in log.calls
                if op == "sqs.ReceiveMessage" and n and end >= started
            )
            calls = [c for c in log.calls if c[0] >= received]
            dynamo = [(s, e) for s, e, op, _ in calls if op.startswith("dynamodb.")]
            # The capture queue may hand the average back before the worker's PutEvents
            # has returned, so the publish is located by its start.
            publish = min(s for s, op in log.starts if op == "events.PutEvents" and s >= received)
            dynamo_s = sum(e - s for s, e in dynamo)
            segments["bus_to_worker_receive"].append(received - started)
            segments["worker_before_dynamodb"].append(min(s for s, _ in dynamo) - received)
            segments["dynamodb_calls"].append(dynamo_s)
            segments["worker_between_calls"].append(publish - min(s for s, _ in dynamo) - dynamo_s)
            segments["worker_put_events_to_capture_arrival"].append(arrived - publish)
            segments["total"].append(arrived - started)
    return {
        "bare": summary_ms(bare),
        "segments": {name: summary_ms(values) for name, values in segments.items()},
    }


async def _stop_worker(worker: Any) -> None:
    worker.stop()
    await anyio.lowlevel.checkpoint()


async def measure(report: dict[str, Any], orders: int) -> None:
    dummy_credentials()
    emulator = Emulator()
    emulator.start()
    try:
        print(f"latency: {orders} orders, emulator {emulator.url} (pid {emulator._process.pid})")  # type: ignore[union-attr]
        load_before = round(load_average(), 2)
        real = bench_settings(
            emulator.url, "bench-latency", metrics_port=free_port(), receive_wait_seconds=20
        )
        started = time.perf_counter()
        headline = await measure_real_process(real, orders)
        print(f"  real process measured in {time.perf_counter() - started:.1f}s")
        split_orders = max(50, orders // 5)
        inproc = bench_settings(emulator.url, "bench-latency-inproc", receive_wait_seconds=20)
        started = time.perf_counter()
        breakdown = await measure_breakdown(inproc, split_orders)
        print(f"  in-process breakdown measured in {time.perf_counter() - started:.1f}s")
    finally:
        emulator.stop()
    figures = {
        "orders": orders,
        "load_average": [load_before, round(load_average(), 2)],
        **headline,
        "target_ratio": TARGET_RATIO,
        "met": headline["ratio_p50"] <= TARGET_RATIO,
        "target_over_forwarder": TARGET_OVER_FORWARDER,
        "met_over_forwarder": max(
            headline["worker_over_forwarder_p50"], headline["estimate_over_forwarder_p50"]
        )
        <= TARGET_OVER_FORWARDER,
        "breakdown_in_process": breakdown,
    }
    report["latency"] = figures
    b, f, w = headline["bare"], headline["forwarder"], headline["worker"]
    print(
        f"  bare PutEvents->rule->SQS->receive: p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms\n"
        f"  do-nothing forwarder (two bare hops): p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms "
        f"({headline['forwarder_ratio_p50']}x bare)\n"
        f"  completion -> DrinkAverageTime (real worker, 20 s long poll): "
        f"p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms\n"
        f"  ratio p50/p50: {headline['ratio_p50']} (target <= {TARGET_RATIO}: "
        f"{'met' if figures['met'] else 'MISSED'}); worker/forwarder p50: "
        f"{headline['worker_over_forwarder_p50']}, the WaitEstimate's "
        f"{headline['estimate_over_forwarder_p50']} (p50 {headline['worker_estimate']['p50_ms']} ms; "
        f"target <= {TARGET_OVER_FORWARDER}: "
        f"{'met' if figures['met_over_forwarder'] else 'MISSED'})\n"
        f"  load average before/after: {figures['load_average']}\n"
        f"  the bare probe's PutEvents call alone: p50 "
        f"{headline['bare_put_events_call']['p50_ms']} ms (moto enqueues on the rule's target "
        "inside that call; the rest of the round trip is the long poll waking and answering)\n"
        f"  worker flush (its receives excluded) mean {headline['worker_flush_mean_ms']} ms; "
        f"AWS calls during the timed part: {headline['worker_aws_calls_during_timing']}"
    )
    print(f"  where the time goes (in-process worker, {split_orders} orders, p50 / p99 ms):")
    same_phase = breakdown["bare"]
    print(
        f"    {'bare round trip (same phase)':40} {same_phase['p50_ms']:>8} / {same_phase['p99_ms']}"
    )
    for name, stats in breakdown["segments"].items():
        print(f"    {name:40} {stats['p50_ms']:>8} / {stats['p99_ms']}")


def run(report: dict[str, Any], orders: int = 500) -> None:
    """Measure and fill ``report["latency"]`` (synchronous; starts its own event loop)."""
    quiet_logs()
    report.setdefault("machine", print_machine())
    anyio.run(measure, report, orders)


if __name__ == "__main__":
    results: dict[str, Any] = {}
    run(results, int(sys.argv[1]) if len(sys.argv) > 1 else 500)
    print(json.dumps(results, indent=2))
