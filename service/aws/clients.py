"""AWS clients for the adapters: one aiobotocore session, region from settings.

Endpoints are botocore's to resolve, as every AWS SDK does: ``AWS_ENDPOINT_URL_SQS``,
``AWS_ENDPOINT_URL_EVENTBRIDGE`` and ``AWS_ENDPOINT_URL_DYNAMODB`` before
``AWS_ENDPOINT_URL``, then the shared config file (a ``services`` section, then the
profile's ``endpoint_url``), none of them with ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``.
Only an endpoint the settings impose (``Settings.endpoint_for``: code that started its own
emulator) is passed explicitly, and so wins over all of those.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from service.settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_events import EventBridgeClient
    from types_aiobotocore_sqs import SQSClient

# botocore retries each request once more (standard mode, full jitter), which absorbs a
# single throttle or 5xx; anything past that reaches the worker, which owns the one
# retry loop, so readiness and metrics see every failure that lasts (docs/decisions.md).
CLIENT_CONFIG = AioConfig(
    # total_max_attempts counts the first try; botocore's "max_attempts" counts retries only.
    retries={"total_max_attempts": 2, "mode": "standard"},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=50,
)


@dataclass
class AwsClients:
    """The three clients the service uses."""

    sqs: SQSClient
    dynamodb: DynamoDBClient
    events: EventBridgeClient


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

    def options(service: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"region_name": settings.region, "config": CLIENT_CONFIG}
        imposed = settings.endpoint_for(service)
        if imposed:
            kwargs["endpoint_url"] = imposed
        return kwargs

    sqs = await stack.enter_async_context(session.create_client("sqs", **options("sqs")))
    dynamodb = await stack.enter_async_context(
        session.create_client("dynamodb", **options("dynamodb"))
    )
    events = await stack.enter_async_context(session.create_client("events", **options("events")))
    if on_call is not None:
        for service, client in (("sqs", sqs), ("dynamodb", dynamodb), ("events", events)):
            client.meta.events.register(
                f"before-send.{client.meta.service_model.service_id.hyphenize()}",
                _counter(service, on_call),
            )
    return AwsClients(sqs, dynamodb, events)


def _counter(service: str, on_call: Callable[[str, str], None]) -> Callable[..., None]:
    def count(event_name: str = "", **_: Any) -> None:
        # botocore names the event before-send.<service-id>.<Operation>
        on_call(service, event_name.rsplit(".", 1)[-1])

    return count
