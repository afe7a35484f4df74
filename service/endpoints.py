"""The worker's HTTP endpoints on aiohttp (as the board's are): ``/metrics``, ``/healthz``
and ``/readyz``.

``/metrics`` negotiates as prometheus-client's own handlers do: OpenMetrics when the
``Accept`` header asks for it (else the classic text format), gzip when
``Accept-Encoding`` accepts it. ``/healthz`` answers while the process serves;
``/readyz`` answers 503 with the reason while a dependency fails (``service.readiness``).
Any other path is a 404, any method but GET or HEAD a 405, each with a one-line body;
every answer closes its connection.

``serve_endpoints`` runs in the worker's task group (``service.app``): it reports the
bound port when listening and stops when that group is cancelled. The board's server
(``service.board``) keeps its registry under the same key and shuts down in the same budget.
"""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
import structlog
from aiohttp import hdrs, web
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from service.readiness import Health

log = structlog.get_logger(__name__)

REGISTRY_KEY: Final = web.AppKey("registry", CollectorRegistry)
HEALTH_KEY: Final = web.AppKey("health", Health[Any])
# The aiohttp servers' shutdown budget, the worker's and the board's: scrapes and probes
# answer at once and the board ends its open streams at once, so only a stuck write waits
# this long.
SHUTDOWN_SECONDS: Final = 2.0


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain")


def _joined(request: web.Request, name: str) -> str:
    """A request's header field; a repeated field's values joined by commas, which is what
    a repeated field means (RFC 9110, 5.3)."""
    return ", ".join(request.headers.getall(name, []))


async def metrics_page(request: web.Request) -> web.Response:
    """``/metrics``: the registry, in the format and encoding the scraper accepts."""
    # prometheus-client's own negotiation, as its HTTP handlers do it.
    encoder, content_type = choose_encoder(_joined(request, hdrs.ACCEPT))
    body = encoder(request.app[REGISTRY_KEY])
    headers = {hdrs.CONTENT_TYPE: content_type}
    if gzip_accepted(_joined(request, hdrs.ACCEPT_ENCODING)):
        body = gzip.compress(body)
        headers[hdrs.CONTENT_ENCODING] = "gzip"
    return web.Response(body=body, headers=headers)


async def healthz(_: web.Request) -> web.Response:
    """Alive."""
    return _text(200, "ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready, or 503 with why not."""
    health = request.app[HEALTH_KEY]
    if health.ready:
        return _text(200, "ready\n")
    return _text(503, f"not ready: {health.reason}\n")


async def elsewhere(request: web.Request) -> web.Response:
    """Any other request: 405 for a method the endpoints do not take, else 404."""
    if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
        return _text(405, "method not allowed\n")
    return _text(404, "not found\n")


@web.middleware
async def _one_answer_per_connection(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """``Connection: close`` on every answer, as the endpoints always answered: probes and
    scrapes come seconds apart, and a client reading to the end of the stream (a bare
    health check) gets its answer at once, not after the keep-alive timeout."""
    response = await handler(request)
    response.force_close()
    return response


def endpoints_app(registry: CollectorRegistry, health: Health[Any]) -> web.Application:
    """The three endpoints over a registry and a readiness."""
    app = web.Application(middlewares=[_one_answer_per_connection])
    app[REGISTRY_KEY] = registry
    app[HEALTH_KEY] = health
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    # Last: a known path asked with another method ends here too, and gets its 405.
    app.router.add_route("*", "/{path:.*}", elsewhere)
    return app


async def serve_endpoints(
    registry: CollectorRegistry,
    health: Health[Any],
    host: str,
    port: int,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the three endpoints until cancelled; reports the bound port when started."""
    runner = web.AppRunner(
        endpoints_app(registry, health), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
        log.info("metrics_listening", host=host, port=bound)
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
