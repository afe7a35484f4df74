"""AWS clients for the adapters: one aiobotocore session, endpoint and region from settings."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from service.settings import Settings

# botocore's own retries are kept short: the adapters retry with their own backoff so
# that readiness and metrics see every failure.
CLIENT_CONFIG = AioConfig(
    retries={"max_attempts": 2, "mode": "standard"},
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


async def open_clients(settings: Settings, stack: AsyncExitStack) -> AwsClients:
    """Create the clients inside ``stack``, which closes them."""
    session = get_session()
    kwargs: dict[str, Any] = {"region_name": settings.region, "config": CLIENT_CONFIG}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    sqs = await stack.enter_async_context(session.create_client("sqs", **kwargs))
    dynamodb = await stack.enter_async_context(session.create_client("dynamodb", **kwargs))
    events = await stack.enter_async_context(session.create_client("events", **kwargs))
    return AwsClients(sqs=sqs, dynamodb=dynamodb, events=events)
