"""AWS clients for the adapters: one aiobotocore session, endpoint and region from settings."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from service.settings import Settings

# botocore's own retries are kept short: the adapters retry with their own backoff so
# that readiness and metrics see every failure.
CLIENT_CONFIG = AioConfig(
    # total_max_attempts counts the first try; botocore's "max_attempts" counts retries only
    # (2 would mean three tries, and most failures would never reach our metrics).
    retries={"total_max_attempts": 2, "mode": "standard"},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=50,
)


@dataclass
class AwsClients:
    """The three clients the service uses."""

    sqs: Any
    dynamodb: Any
    events: Any


async def open_clients(
    settings: Settings,
    stack: AsyncExitStack,
    on_call: Callable[[str, str], None] | None = None,
) -> AwsClients:
    """Create the clients inside ``stack``, which closes them.

    ``on_call(service, operation)`` is told of every API request sent, retries included:
    the raw material of the cost-per-order figures.
    """
    session = get_session()
    kwargs: dict[str, Any] = {"region_name": settings.region, "config": CLIENT_CONFIG}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    clients = []
    for service in ("sqs", "dynamodb", "events"):
        client = await stack.enter_async_context(session.create_client(service, **kwargs))
        if on_call is not None:
            client.meta.events.register(
                f"before-send.{client.meta.service_model.service_id.hyphenize()}",
                _counter(service, on_call),
            )
        clients.append(client)
    return AwsClients(*clients)


def _counter(service: str, on_call: Callable[[str, str], None]) -> Callable[..., None]:
    def count(event_name: str = "", **_: Any) -> None:
        # botocore names the event before-send.<service-id>.<Operation>
        on_call(service, event_name.rsplit(".", 1)[-1])

    return count
