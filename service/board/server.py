"""The board's web server (aiohttp): a page per tenant, live over server-sent events.

Routes: ``/`` the tenant picker, ``/tenants/<tenant>`` a tenant's page, ``/events``
(``?tenant=``) its live stream, ``/view.json`` and ``/tenants.json`` the same data once,
``/static/<file>`` the page's script and style sheet (package data: no CDN, no internet),
``/healthz`` for a load balancer, ``/metrics`` for Prometheus.

Names come from producers, so nothing they contain is ever markup: the page's data is one
JSON block (``<``, ``>``, ``&`` and the line separators escaped, so no string can end the
block) that the script reads and turns into DOM nodes with ``textContent``; the few names
in the HTML itself go through ``html.escape``; a Content-Security-Policy allows only the
board's own script and style sheet.
"""

from __future__ import annotations

import asyncio
import html
import json
from importlib import resources
from string import Template
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from service.board.state import BoardState
from service.board.streams import Stream, Streams
from service.endpoints import REGISTRY_KEY

STATIC: Final = resources.files("service.board") / "static"
ASSETS: Final = {"board.js": "text/javascript", "board.css": "text/css"}
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
RETRY_AFTER_SECONDS: Final = 5
STATE_KEY: Final = web.AppKey("state", BoardState)
STREAMS_KEY: Final = web.AppKey("streams", Streams)
KEEPALIVE_KEY: Final = web.AppKey("keepalive", float)


def script_json(value: Any) -> str:
    """JSON that is safe inside an HTML ``<script>`` element: no ``</script>``, no ``<!--``,
    no character a browser would read as markup or a line end."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def page(title: str, boot: dict[str, Any], *, status: int = 200) -> web.Response:
    """The board's one HTML page, with its data for the script."""
    template = Template((STATIC / "page.html").read_text(encoding="utf-8"))
    body = template.substitute(title=html.escape(title), boot=script_json(boot))
    return web.Response(
        text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS
    )


def not_found(tenant: str, state: BoardState) -> web.Response:
    """A clear 404 page for a tenant the board has no page for."""
    served = state.served
    why = (
        "is not one the board serves (WAIT_TIMES_BOARD_TENANTS)"
        if not state.serves(tenant)
        else "has published nothing yet"
    )
    return page(
        "Unknown tenant",
        {"tenant": None, "tenants": state.tenants(), "missing": tenant, "why": why}
        | ({"served": sorted(served)} if served is not None else {}),
        status=404,
    )


def boot_of(state: BoardState, tenant: str | None) -> dict[str, Any]:
    """What a page (and every stream message) carries: the tenant list and a view."""
    found: dict[str, Any] = {"tenant": tenant, "tenants": state.tenants()}
    if tenant is not None:
        found["view"] = state.view(tenant)
    return found


async def index(request: web.Request) -> web.Response:
    """The tenant picker."""
    return page("Wait board", boot_of(request.app[STATE_KEY], None))


async def tenant_page(request: web.Request) -> web.Response:
    """A tenant's page (404 for a tenant the board has no page for)."""
    # ``/tenants/`` is tenant "": the 2021 event shape's orders (docs/design.md).
    state, tenant = request.app[STATE_KEY], request.match_info.get("tenant", "")
    if not state.knows(tenant):
        return not_found(tenant, state)
    return page(f"Wait board: {tenant}", boot_of(state, tenant))


def _tenant_asked(request: web.Request) -> str | None:
    """``?tenant=``; raises 404 for a tenant the board has no page for."""
    state, tenant = request.app[STATE_KEY], request.query.get("tenant")
    if tenant is not None and not state.knows(tenant):
        raise web.HTTPNotFound(text=f"no such tenant on this board: {tenant!r}\n")
    return tenant


async def view_json(request: web.Request) -> web.Response:
    """``/view.json?tenant=``: the tenant's page data once."""
    tenant = _tenant_asked(request)
    if tenant is None:
        raise web.HTTPBadRequest(text="give ?tenant=<tenant>\n")
    return web.json_response(boot_of(request.app[STATE_KEY], tenant))


async def tenants_json(request: web.Request) -> web.Response:
    """``/tenants.json``: the tenants with a page."""
    return web.json_response(request.app[STATE_KEY].tenants())


async def events(request: web.Request) -> web.StreamResponse:
    """``/events`` (``?tenant=``): server-sent events, a ``board`` message with the page's
    data now and after every change, a keep-alive comment when idle; 503 past the bound."""
    tenant = _tenant_asked(request)
    streams = request.app[STREAMS_KEY]
    stream = streams.open(tenant)
    if stream is None:
        raise web.HTTPServiceUnavailable(
            text=f"the board streams to {streams.limit} browsers at most "
            "(WAIT_TIMES_BOARD_MAX_STREAMS); try again shortly\n",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    try:
        return await _stream(request, streams, stream)
    finally:
        streams.close(stream)


async def _stream(request: web.Request, streams: Streams, stream: Stream) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # proxies must not hold events back
        }
    )
    await response.prepare(request)
    await response.write(b"retry: 3000\n\n")
    keepalive = request.app[KEEPALIVE_KEY]
    state = request.app[STATE_KEY]
    while not streams.closing:
        stream.changed.clear()
        data = script_json(boot_of(state, stream.tenant))
        await response.write(f"event: board\ndata: {data}\n\n".encode())
        while not stream.changed.is_set():
            try:
                async with asyncio.timeout(keepalive):
                    await stream.changed.wait()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
    return response


async def static(request: web.Request) -> web.Response:
    """The page's script and style sheet, from package data."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound(text="no such file\n")
    return web.Response(
        body=(STATIC / name).read_bytes(),
        content_type=ASSETS[name],
        charset="utf-8",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


async def healthz(_: web.Request) -> web.Response:
    """Alive (for a load balancer's health check)."""
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    """The board's counters, in Prometheus's text format."""
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(
    state: BoardState,
    streams: Streams,
    registry: CollectorRegistry,
    *,
    keepalive_seconds: float,
) -> web.Application:
    """The board's aiohttp application over its state, its streams and its counters."""
    app = web.Application()
    app[STATE_KEY] = state
    app[STREAMS_KEY] = streams
    app[REGISTRY_KEY] = registry
    app[KEEPALIVE_KEY] = keepalive_seconds
    app.router.add_get("/", index)
    app.router.add_get("/tenants/{tenant:.+}", tenant_page)
    app.router.add_get("/tenants/", tenant_page)
    app.router.add_get("/events", events)
    app.router.add_get("/view.json", view_json)
    app.router.add_get("/tenants.json", tenants_json)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
