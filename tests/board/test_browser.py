"""The wait board in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright, never ``playwright install``) at a phone's 360x740 viewport, against provision,
the worker and the player's traffic on the embedded moto server.

Chromium missing is a failure, not a skip: CI installs it (``apt-get install chromium``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import anyio
import pytest
from playwright.async_api import BrowserContext, Page, async_playwright
from structlog.testing import capture_logs

from service.aws.provision import provision
from service.board.app import run_board
from service.core.published import AVERAGE_DETAIL_TYPE, ESTIMATE_DETAIL_TYPE
from service.settings import Settings
from tests.helpers import ROOT, Aws, burst, generated, put_planned, scan_windows

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("cloud", ["moto"], indirect=True)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALLED = CHROMIUM.exists()  # read once, not inside the event loop
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--no-first-run",
]
ARTIFACTS = ROOT / "tests" / "artifacts"
HOSTILE_TENANT = "<script>window.__pwned=1</script>\"'&a/b"
HOSTILE_DRINK = '<img src=x onerror="window.__pwned=2">\'"</script>'


def board_settings(aws: Aws, **overrides: Any) -> Settings:
    """The test's settings with the board on: its own queue, any free port on loopback."""
    values: dict[str, Any] = {
        "board_enabled": True,
        "board_port": 0,
        "board_host": "127.0.0.1",
        "board_keepalive_seconds": 1.0,
    }
    return aws.settings.model_copy(update=values | overrides)


@asynccontextmanager
async def running_board(settings: Settings) -> AsyncIterator[str]:
    """``wait-times board`` in this process; yields its base URL."""
    async with anyio.create_task_group() as group:
        port = await group.start(partial(run_board, settings))
        yield f"http://127.0.0.1:{port}"
        group.cancel_scope.cancel()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """Headless Chromium with a fresh profile, at a phone's viewport."""
    if not CHROMIUM_INSTALLED:
        pytest.fail(f"{CHROMIUM} is missing: install Debian's package (apt-get install chromium)")
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 360, "height": 740},
        )
        try:
            yield context
        finally:
            await context.close()


def minutes(seconds: float) -> str:
    """The page's format of a duration (board.js ``duration``)."""
    whole = round(seconds)
    return f"{whole // 60}m {whole % 60:02d}s"


async def stored_averages(aws: Aws, tenant: str) -> dict[str, float]:
    windows = await scan_windows(aws.clients, aws.settings)
    return {
        d: s.window.duration
        for (t, d), s in windows.items()
        if t == tenant and s.window.duration is not None
    }


async def shown(page: Page) -> dict[str, dict[str, str]]:
    """Each drink card's figures as the page shows them."""
    found: dict[str, dict[str, str]] = await page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('li.drink')].map(li => [
            li.querySelector('h2').textContent,
            Object.fromEntries([...li.querySelectorAll('dd')].map(dd => [dd.className, dd.textContent]))
        ]))"""
    )
    return found


async def publish(aws: Aws, settings: Settings, *details: tuple[str, dict[str, Any]]) -> None:
    """Put the service's own events on the bus, as the worker publishes them."""
    await aws.clients.events.put_events(
        Entries=[
            {
                "Source": settings.source,
                "DetailType": detail_type,
                "Detail": json.dumps(detail),
                "EventBusName": settings.event_bus,
            }
            for detail_type, detail in details
        ]
    )


async def stream_again(
    http: aiohttp.ClientSession, url: str, *, within: float
) -> aiohttp.ClientResponse:
    """A new ``/events`` stream, asked for until the board has a slot free again."""
    with anyio.fail_after(within):
        while True:
            again = await http.get(f"{url}/events")
            if again.status == 200:
                return again
            await anyio.sleep(0.1)


async def wait_for(condition: Any, seconds: float, what: str) -> None:
    with anyio.move_on_after(seconds):
        while not await condition():  # noqa: ASYNC110 - polls a page and a queue
            await anyio.sleep(0.2)
        return
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


async def test_the_board_shows_values_at_once_and_follows_new_events(
    aws: Aws, browser: BrowserContext
) -> None:
    settings = board_settings(aws)
    board_queue = (await provision(settings, aws.clients)).board_queue_url
    assert board_queue is not None
    await put_planned(aws, generated(orders=80, seed=3))
    await burst(settings)
    before = await stored_averages(aws, "NYC")
    assert before, "the first traffic paired NYC orders"
    # The board's queue holds the same values: emptied, only the table can show them.
    await aws.clients.sqs.purge_queue(QueueUrl=board_queue)
    with capture_logs() as logs:
        async with running_board(settings) as url:
            page = await browser.new_page()
            await page.goto(f"{url}/tenants/NYC")
            # At once, from the table: the averages the worker stored, before any event.
            first = await shown(page)
            assert {d: row["average"] for d, row in first.items() if d in before} == {
                d: minutes(v) for d, v in before.items()
            }
            assert any(row["estimate"] != "pending" for row in first.values()), first
            await page.wait_for_selector("#status[data-state=live]", timeout=10_000)

            # More traffic: the page changes by itself, to what the table now holds.
            await put_planned(aws, generated(orders=80, seed=4))
            await burst(settings)
            after = await stored_averages(aws, "NYC")
            assert after != before

            async def caught_up() -> bool:
                rows = await shown(page)
                return {d: rows.get(d, {}).get("average") for d in after} == {
                    d: minutes(v) for d, v in after.items()
                }

            await wait_for(caught_up, 30, "the page to show the new averages")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "board.png"), full_page=True)
            width = await page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 360, "no sideways scrolling on a phone"

            # A malformed message: one line, counted, in the board's DLQ; the board lives on.
            await aws.clients.sqs.send_message(QueueUrl=board_queue, MessageBody="{not json")
            dlq = (
                await aws.clients.sqs.get_queue_url(QueueName=f"{settings.board_queue_name}-dlq")
            )["QueueUrl"]
            moved: list[str] = []

            async def dead_lettered() -> bool:
                got = await aws.clients.sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0)
                moved.extend(m["Body"] for m in got.get("Messages", []))
                return bool(moved)

            await wait_for(dead_lettered, 30, "the malformed message in the board's DLQ")
            assert moved == ["{not json"], "kept whole for inspection"
            malformed = [e for e in logs if e["event"] == "board_message_malformed"]
            assert [(e["reason"], e["dead_letter"]) for e in malformed] == [("not_json", True)]
            async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
                text = await response.text()
            assert 'wait_times_board_messages_total{outcome="malformed"} 3.0' in text
            assert await page.text_content("#status") == "live"
            assert await caught_up(), "nothing good was lost"

            # A tenant the board has no page for: a clear 404.
            missing = await browser.new_page()
            answer = await missing.goto(f"{url}/tenants/Atlantis")
            assert answer is not None and answer.status == 404
            body = await missing.text_content("main")
            assert body is not None and "No such tenant" in body and "Atlantis" in body
    # The board gone: the page keeps what it showed and says it is reconnecting.
    await page.wait_for_selector("#status[data-state=lost]", timeout=10_000)
    assert await page.text_content("#status") == "reconnecting\u2026"
    assert await caught_up()
    assert [e for e in logs if e["log_level"] in ("error", "critical")] == malformed


async def test_hostile_names_render_as_text_and_run_nothing(
    aws: Aws, browser: BrowserContext
) -> None:
    settings = board_settings(aws)
    await provision(settings, aws.clients)
    average = {
        "eventId": HOSTILE_TENANT,
        "drink": HOSTILE_DRINK,
        "duration": 83.0,
        "samples": 2,
        "window": 10,
        "version": 1,
        "updatedAt": "2026-05-01T12:00:00Z",
    }
    estimate = {
        "eventId": HOSTILE_TENANT,
        "asOf": "2026-05-01T12:00:00Z",
        "openOrders": 4,
        "drinks": {HOSTILE_DRINK: {"estimate": 125.0, "p90": 300.0}},
        "version": 1,
    }
    async with running_board(settings) as url:
        page = await browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: dialogs.append(dialog.message))
        await page.goto(url)
        await page.wait_for_selector("#status[data-state=live]", timeout=10_000)
        await publish(
            aws, settings, (AVERAGE_DETAIL_TYPE, average), (ESTIMATE_DETAIL_TYPE, estimate)
        )
        # The index learns the tenant live; its link is the name as text.
        link = page.locator("ul.tenants a")
        await link.wait_for(timeout=15_000)
        assert await link.text_content() == HOSTILE_TENANT
        await link.click()
        await page.wait_for_selector("li.drink", timeout=10_000)
        assert unquote(page.url.removeprefix(f"{url}/tenants/")) == HOSTILE_TENANT
        assert await page.title() == f"Wait board: {HOSTILE_TENANT}"
        assert await page.text_content("h1") == HOSTILE_TENANT
        rows = await shown(page)
        assert rows == {
            HOSTILE_DRINK: {
                "estimate": "2m 05s",
                "p90": "5m 00s",
                "ahead": "4",
                "average": "1m 23s",
            }
        }
        assert await page.evaluate("() => window.__pwned === undefined")
        assert await page.locator("img").count() == 0
        assert await page.locator("script").count() == 2  # the data block and board.js
        assert dialogs == []


async def test_the_2021_shapes_tenant_has_a_page_like_any_other(
    aws: Aws, browser: BrowserContext
) -> None:
    """Orders of the 2021 event shape carry no tenant: they are tenant "", at /tenants/."""
    settings = board_settings(aws)
    await provision(settings, aws.clients)
    details = (
        (
            AVERAGE_DETAIL_TYPE,
            {
                "eventId": "",
                "drink": "Latte",
                "duration": 95.0,
                "samples": 3,
                "window": 10,
                "version": 1,
                "updatedAt": "2026-05-01T12:00:00Z",
            },
        ),
        (
            ESTIMATE_DETAIL_TYPE,
            {
                "eventId": "",
                "asOf": "2026-05-01T12:00:00Z",
                "openOrders": 2,
                "drinks": {"Latte": {"estimate": 70.0, "p90": 100.0}},
                "version": 1,
            },
        ),
    )
    async with running_board(settings) as url:
        page = await browser.new_page()
        await page.goto(url)
        await page.wait_for_selector("#status[data-state=live]", timeout=10_000)
        await publish(aws, settings, *details)
        link = page.locator("ul.tenants a")
        await link.wait_for(timeout=15_000)
        assert await link.text_content() == "(no tenant: the 2021 events)"
        await link.click()
        await page.wait_for_selector("li.drink", timeout=10_000)
        assert page.url == f"{url}/tenants/"
        assert await shown(page) == {
            "Latte": {"estimate": "1m 10s", "p90": "1m 40s", "ahead": "2", "average": "1m 35s"}
        }


async def test_streams_are_bounded_keep_alive_and_assets_are_the_boards_own(aws: Aws) -> None:
    settings = board_settings(aws, board_max_streams=2, board_keepalive_seconds=0.2)
    await provision(settings, aws.clients)
    async with running_board(settings) as url, aiohttp.ClientSession() as http:
        first = await http.get(f"{url}/events")
        second = await http.get(f"{url}/events")
        assert first.status == second.status == 200
        assert first.headers["Content-Type"] == "text/event-stream"
        seen = b""
        with anyio.fail_after(10):
            while b": keep-alive" not in seen:
                seen += await first.content.readany()
        assert b"event: board\ndata: " in seen
        refused = await http.get(f"{url}/events")
        assert refused.status == 503
        assert refused.headers["Retry-After"] == "5"
        assert "WAIT_TIMES_BOARD_MAX_STREAMS" in await refused.text()
        first.close()
        (await stream_again(http, url, within=10)).close()  # the server notices the close
        second.close()
        for name, kind in (("board.js", "text/javascript"), ("board.css", "text/css")):
            async with http.get(f"{url}/static/{name}") as response:
                assert response.status == 200
                assert response.content_type == kind
        async with http.get(f"{url}/static/..%2Fseed.py") as response:
            assert response.status == 404
        async with http.get(f"{url}/") as response:
            page = await response.text()
            assert "Content-Security-Policy" in response.headers
        assert "http://" not in page and "https://" not in page, "no CDN: every asset is ours"
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


async def test_a_browser_that_leaves_frees_its_stream_before_any_keep_alive(aws: Aws) -> None:
    """Keep-alives every 60 s: a closed stream must free its slot at once all the same
    (the handler is cancelled when its client goes), so a reload is never refused."""
    settings = board_settings(aws, board_max_streams=1, board_keepalive_seconds=60.0)
    await provision(settings, aws.clients)
    async with running_board(settings) as url, aiohttp.ClientSession() as http:
        first = await http.get(f"{url}/events")
        assert first.status == 200
        await first.content.readany()  # (its first message: the stream is open)
        first.close()
        (await stream_again(http, url, within=5)).close()
