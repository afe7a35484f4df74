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
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.board.feed import Board, Stream

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
BOARD_KEY: Final = web.AppKey("board", Board)
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


def not_found(tenant: str, board: Board) -> web.Response:
    """A clear 404 page for a tenant the board has no page for."""
    served = board.state.served
    why = (
        "is not one the board serves (WAIT_TIMES_BOARD_TENANTS)"
        if not board.state.serves(tenant)
        else "has published nothing yet"
    )
    return page(
        "Unknown tenant",
        {"tenant": None, "tenants": board.state.tenants(), "missing": tenant, "why": why}
        | ({"served": sorted(served)} if served is not None else {}),
        status=404,
    )


def boot_of(board: Board, tenant: str | None) -> dict[str, Any]:
    """What a page (and every stream message) carries: the tenant list and a view."""
    state = board.state
    found: dict[str, Any] = {"tenant": tenant, "tenants": state.tenants()}
    if tenant is not None:
        found["view"] = state.view(tenant)
    return found


async def index(request: web.Request) -> web.Response:
    """The tenant picker."""
    return page("Wait board", boot_of(request.app[BOARD_KEY], None))


async def tenant_page(request: web.Request) -> web.Response:
    """A tenant's page (404 for a tenant the board has no page for)."""
    board, tenant = request.app[BOARD_KEY], request.match_info["tenant"]
    if not board.state.knows(tenant):
        return not_found(tenant, board)
    return page(f"Wait board: {tenant}", boot_of(board, tenant))


def _tenant_asked(request: web.Request) -> str | None:
    """``?tenant=``; raises 404 for a tenant the board has no page for."""
    board, tenant = request.app[BOARD_KEY], request.query.get("tenant")
    if tenant is not None and not board.state.knows(tenant):
        raise web.HTTPNotFound(text=f"no such tenant on this board: {tenant!r}\n")
    return tenant


async def view_json(request: web.Request) -> web.Response:
    """``/view.json?tenant=``: the tenant's page data once."""
    tenant = _tenant_asked(request)
    if tenant is None:
        raise web.HTTPBadRequest(text="give ?tenant=<tenant>\n")
    return web.json_response(boot_of(request.app[BOARD_KEY], tenant))


async def tenants_json(request: web.Request) -> web.Response:
    """``/tenants.json``: the tenants with a page."""
    return web.json_response(request.app[BOARD_KEY].state.tenants())


async def events(request: web.Request) -> web.StreamResponse:
    """``/events`` (``?tenant=``): server-sent events, a ``board`` message with the page's
    data now and after every change, a keep-alive comment when idle; 503 past the bound."""
    tenant = _tenant_asked(request)
    board = request.app[BOARD_KEY]
    stream = board.streams.open(tenant)
    if stream is None:
        raise web.HTTPServiceUnavailable(
            text=f"the board streams to {board.streams.limit} browsers at most "
            "(WAIT_TIMES_BOARD_MAX_STREAMS); try again shortly\n",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    try:
        return await _stream(request, board, stream)
    finally:
        board.streams.close(stream)


async def _stream(request: web.Request, board: Board, stream: Stream) -> web.StreamResponse:
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
    while not board.streams.closing:
        stream.changed.clear()
        data = script_json(boot_of(board, stream.tenant))
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
    body = generate_latest(request.app[BOARD_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(board: Board, *, keepalive_seconds: float) -> web.Application:
    """The board's aiohttp application."""
    app = web.Application()
    app[BOARD_KEY] = board
    app[KEEPALIVE_KEY] = keepalive_seconds
    app.router.add_get("/", index)
    app.router.add_get("/tenants/{tenant:.+}", tenant_page)
    app.router.add_get("/events", events)
    app.router.add_get("/view.json", view_json)
    app.router.add_get("/tenants.json", tenants_json)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
