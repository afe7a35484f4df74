"""The events the service consumes: their detail-types and the role each plays for an
order's wait, the EventBridge rule pattern that routes them, and the parsing of their
envelopes into ``OrderEvent``s (or the poison reason that says why one can never be
processed).

Parsing is the hot path of both the worker and ``replay``: a message is decoded once, its
detail-type decides its role with one dictionary look-up (``known_roles``; most traffic
is of types the service ignores, never parsed further), and only the events the service
consumes are validated, by a fast path for the common well-formed shape or by the
pydantic models below (which are also the published schema of what is consumed).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from service.core.orders import OrderEvent, Role
from service.errors import PoisonMessageError

SUBMITTED_DETAIL_TYPE: Final = "OrderManager.WaitingCompletion"
LEGACY_COMPLETED_DETAIL_TYPE: Final = "OrderManager.OrderCompleted"
LEGACY_CANCELLED_DETAIL_TYPE: Final = "OrderManager.OrderCancelled"
TIMED_OUT_DETAIL_TYPE: Final = "OrderProcessor.OrderTimeOut"
ORDER_FINISHED_DETAIL_TYPE: Final = "OrderProcessor.orderFinished"
# Which event ends an order's wait (WAIT_TIMES_COMPLETION_EVENT): the barista's
# completion, or, as the first version of this extension did, the workflow's end.
COMPLETED: Final = "completed"
ORDER_FINISHED: Final = "order-finished"
TENANT_ORDER_PREFIX: Final = "OrderManager.Order"

MAX_BODY_BYTES: Final = 64 * 1024
MAX_ORDER_ID_LENGTH: Final = 128
MAX_NAME_LENGTH: Final = 128

OrderId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ORDER_ID_LENGTH)
]


def normalize_name(value: str) -> str:
    """A tenant or drink as the service keys it: Unicode NFC, surrounding blanks stripped.

    ``Caffè`` composed and decomposed are one drink; one rule, whichever field a name
    comes from (docs/design.md, "Names").
    """
    if not value.isascii():
        value = unicodedata.normalize("NFC", value)
    return value.strip()


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=MAX_NAME_LENGTH),
    AfterValidator(normalize_name),
]


def rfc3339_only(value: object) -> object:
    """Refuse an envelope ``time`` that is not an RFC 3339 string before pydantic reads it:
    its lax datetime would take a number, or a string of digits, as epoch seconds (a
    completion stamped 1970 would then win "earliest"), and it reads shapes RFC 3339 does
    not allow (no seconds, an offset without its colon). The ranges (month 13, hour 25)
    are pydantic's to check."""
    if not isinstance(value, str) or _DATE_TIME.fullmatch(value) is None:
        raise ValueError("not an RFC 3339 date-time such as 2022-10-14T12:52:21Z")
    return value


# RFC 3339's date-time: full-date, "T" (or "t", or a space, which section 5.6 allows),
# partial-time with seconds and an optional fraction, then "Z" or a numeric offset.
_DATE_TIME: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)

EventTime = Annotated[AwareDatetime, BeforeValidator(rfc3339_only)]


class DrinkOrder(BaseModel):
    """The part of ``detail.drinkOrder`` the service reads."""

    model_config = ConfigDict(extra="allow", frozen=True)
    drink: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_LENGTH),
        AfterValidator(normalize_name),
    ]


class SubmittedDetail(BaseModel):
    """``detail`` of ``OrderManager.WaitingCompletion``: the order reached the barista."""

    model_config = ConfigDict(extra="allow", frozen=True)
    orderId: OrderId
    drinkOrder: DrinkOrder
    eventId: Any = Field(None, description="tenant (current shape); ignored unless a string")
    state: Any = Field(None, description="'<tenant>-CREATED' in the 2022 shape")


class OrderRefDetail(BaseModel):
    """``detail`` of a completion or cancellation: only the order it is about matters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    orderId: OrderId
    eventId: Any = Field(None, description="tenant, where the producer sets it")


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    id: str = ""
    detail_type: str = Field(alias="detail-type")
    source: str
    time: EventTime
    account: str | None = None


class SubmittedEnvelope(_Envelope):
    """EventBridge envelope of a submission."""

    detail: SubmittedDetail


class OrderRefEnvelope(_Envelope):
    """EventBridge envelope of a completion or cancellation."""

    detail: OrderRefDetail


def tenant_of(event_id: object, state: object) -> str:
    """The tenant: ``detail.eventId`` when it is a string, else the prefix of
    ``detail.state`` before ``-CREATED``, else ''; normalized like every name. Over
    ``MAX_NAME_LENGTH`` characters it is poison, never truncated."""
    if isinstance(event_id, str):
        tenant = normalize_name(event_id)
    elif isinstance(state, str) and state.endswith("-CREATED"):
        tenant = normalize_name(state[: -len("-CREATED")])
    else:
        return ""
    if len(tenant) > MAX_NAME_LENGTH:
        raise PoisonMessageError(
            "invalid_tenant", f"tenant of {len(tenant)} characters > {MAX_NAME_LENGTH}"
        )
    return tenant


def decode_body(body: str | bytes) -> Any:
    """Decode a message body as JSON, or raise PoisonMessageError saying why not.

    Its size is counted in UTF-8 bytes, as SQS and a replayed file count it: a body of
    few characters but many bytes is as oversized in the worker as in ``replay``."""
    size = len(body)
    if type(body) is str and size * 4 > MAX_BODY_BYTES and not body.isascii():
        size = len(body.encode(errors="surrogatepass"))
    if size > MAX_BODY_BYTES:
        raise PoisonMessageError("oversized", f"body of {size} bytes > {MAX_BODY_BYTES}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessageError("not_json", str(exc)[:200]) from None


def parse_envelope(
    envelope: Any,
    *,
    source: str | None = None,
    not_after: int | None = None,
    completion: str = COMPLETED,
) -> OrderEvent | None:
    """Reduce a decoded EventBridge envelope to an OrderEvent, or None when it is ignored.

    ``source``: when given, events from any other source are ignored.
    ``not_after``: epoch seconds; a later ``time`` is refused as a poison message.
    Raises PoisonMessageError for anything that can never be processed.
    """
    if type(envelope) is not dict:
        raise PoisonMessageError(
            "not_an_envelope", f"JSON {type(envelope).__name__}, not an object"
        )
    detail_type = envelope.get("detail-type")
    if type(detail_type) is not str:
        raise PoisonMessageError("not_an_envelope", "no string 'detail-type'")
    # Most traffic is of ignored types: one dict look-up decides, without a call.
    role: Role | None = _ROLE_CACHES[completion].get(detail_type, _MISSING)  # type: ignore[arg-type]
    if role is _MISSING:
        role = role_of(detail_type, completion)
    if role is None:
        return None
    return parse_classified(envelope, role, source, not_after)


def parse_classified(
    envelope: dict[str, Any], role: Role, source: str | None, not_after: int | None, /
) -> OrderEvent | None:
    """``parse_envelope`` for an envelope whose detail-type is known to have ``role``
    (``known_roles``): replay's loop has looked it up already (positional arguments: one
    call per accepted line)."""
    if source is not None and envelope.get("source") != source:
        return None
    event = _fast_path(envelope, role)
    if event is None:
        event = _validated(envelope, role)
    if not_after is not None and event.time > not_after:
        raise PoisonMessageError(
            "time_in_future", f"time {envelope.get('time')} is later than {not_after}"
        )
    return event


def _fast_path(envelope: dict[str, Any], role: Role) -> OrderEvent | None:
    """The common, well-formed case without pydantic; None defers to the models.

    It only ever accepts what the models accept (exact types, no surrounding blanks, the
    canonical EventBridge time format), so the models stay the one definition of valid;
    anything unusual is validated by them, which also names the problem. The usual shape
    (a time seen before, ASCII names) is decided inline, without a call: this is replay's
    hot path, one call per accepted line.
    """
    detail = envelope.get("detail")
    source = envelope.get("source")
    event_id = envelope.get("id", "")
    account = envelope.get("account")
    if (
        type(detail) is not dict
        or type(source) is not str
        or type(event_id) is not str
        or (account is not None and type(account) is not str)
    ):
        return None
    value = envelope.get("time")
    time = _TIME_CACHE.get(value) if type(value) is str else None
    if time is None:
        time = _epoch(value)
    order_id = detail.get("orderId")
    if (
        time is None
        or type(order_id) is not str
        or not 0 < len(order_id) <= MAX_ORDER_ID_LENGTH
        or order_id.strip() != order_id
    ):
        return None
    if role is _SUBMITTED:
        drink_order = detail.get("drinkOrder")
        if type(drink_order) is not dict:
            return None
        drink = drink_order.get("drink")
        if type(drink) is not str or not 0 < len(drink) <= MAX_NAME_LENGTH:
            return None
        # An ASCII name is normalized when it has no surrounding blanks (normalize_name).
        if (not drink.isascii() or drink.strip() != drink) and normalize_name(drink) != drink:
            return None
        tenant_id = detail.get("eventId")
        if type(tenant_id) is str and tenant_id.isascii() and len(tenant_id) <= MAX_NAME_LENGTH:
            tenant = tenant_id.strip()  # what tenant_of gives it
        else:
            try:
                tenant = tenant_of(tenant_id, detail.get("state"))
            except PoisonMessageError:
                return None  # the models refuse it too, and name the problem
        return _new_tuple(OrderEvent, (role, order_id, time, tenant, drink, event_id))
    # A completion's or cancellation's own eventId is not read: the submission's tenant
    # is the order's (docs/design.md).
    return _new_tuple(OrderEvent, (role, order_id, time, "", None, event_id))


# A NamedTuple built by tuple.__new__ skips its generated Python-level __new__: half the
# cost, on replay's hot path (the fields are given in full, in order).
_new_tuple: Final = tuple.__new__
_SUBMITTED: Final = Role.SUBMITTED  # a global, not an attribute look-up on the enum


_TIME_CACHE: dict[str, int] = {}
_CANONICAL_TIME: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _epoch(value: object) -> int | None:
    """Epoch seconds of a canonical ``YYYY-MM-DDTHH:MM:SSZ`` string, else None.

    The shape is matched before ``fromisoformat`` (once per distinct string), which also
    takes other ISO 8601 forms of that length (a week date, ``2022-W41-5T12:52:21Z``)
    that RFC 3339, and so the models, refuse."""
    if type(value) is not str:
        return None
    cached = _TIME_CACHE.get(value)
    if cached is not None:
        return cached
    if _CANONICAL_TIME.fullmatch(value) is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if len(_TIME_CACHE) >= 65536:  # bounded: times are attacker-controlled strings
        _TIME_CACHE.clear()
    epoch = _TIME_CACHE[value] = int(parsed.timestamp())
    return epoch


def _validated(envelope: dict[str, Any], role: Role) -> OrderEvent:
    """The models' validation: accepts every valid shape, names what is wrong otherwise."""
    model = SubmittedEnvelope if role is Role.SUBMITTED else OrderRefEnvelope
    try:
        parsed = model.model_validate(envelope)
    except ValidationError as exc:
        raise _poison_from(exc) from None
    time = int(parsed.time.timestamp())
    detail = parsed.detail
    if isinstance(detail, SubmittedDetail):
        return OrderEvent(
            role=role,
            order_id=detail.orderId,
            time=time,
            tenant=tenant_of(detail.eventId, detail.state),
            drink=detail.drinkOrder.drink,
            event_id=parsed.id,
        )
    return OrderEvent(
        role=role,
        order_id=detail.orderId,
        time=time,
        tenant="",
        event_id=parsed.id,
    )


def parse_body(
    body: str | bytes,
    *,
    source: str | None = None,
    not_after: int | None = None,
    completion: str = COMPLETED,
) -> OrderEvent | None:
    """Decode and parse one SQS message body (an EventBridge envelope)."""
    return parse_envelope(
        decode_body(body), source=source, not_after=not_after, completion=completion
    )


def _poison_from(exc: ValidationError) -> PoisonMessageError:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    kind = "missing" if error["type"] == "missing" else "invalid"
    if loc[:1] == ["detail"] and len(loc) > 1:
        field = {"orderId": "order_id", "drinkOrder": "drink", "drink": "drink"}.get(
            loc[-1], "detail"
        )
        field = "drink" if "drinkOrder" in loc else field
    elif loc:
        field = {"detail-type": "detail_type"}.get(loc[0], loc[0])
    else:
        field = "envelope"
    return PoisonMessageError(f"{kind}_{field}", f"{'.'.join(loc)}: {error['msg']}")


def role_of(detail_type: str, completion: str = COMPLETED) -> Role | None:
    """The role of a detail-type, or None for the ones the service ignores.

    ``completion``: ``completed`` (the barista's ``-COMPLETED``) or ``order-finished``
    (``OrderProcessor.orderFinished``, which also fires for cancelled orders: a
    cancellation seen still excludes the order); the other one is then ignored.
    """
    cache = _ROLE_CACHES[completion]
    role = cache.get(detail_type, _MISSING)
    if role is _MISSING:
        role = _classify_detail_type(detail_type, completion)
        if len(cache) < 4096:  # bounded: detail-types are attacker-controlled strings
            cache[detail_type] = role
    return role  # type: ignore[return-value]


def _classify_detail_type(detail_type: str, completion: str) -> Role | None:
    if detail_type == SUBMITTED_DETAIL_TYPE:
        return Role.SUBMITTED
    if detail_type in (LEGACY_CANCELLED_DETAIL_TYPE, TIMED_OUT_DETAIL_TYPE):
        return Role.CANCELLED
    if detail_type == ORDER_FINISHED_DETAIL_TYPE:
        return Role.COMPLETED if completion == ORDER_FINISHED else None
    if detail_type == LEGACY_COMPLETED_DETAIL_TYPE:
        return Role.COMPLETED if completion == COMPLETED else None
    if detail_type.startswith(TENANT_ORDER_PREFIX):
        if detail_type.endswith("-COMPLETED"):
            return Role.COMPLETED if completion == COMPLETED else None
        if detail_type.endswith("-CANCELLED"):
            return Role.CANCELLED
    return None


_MISSING: Final = object()
_ROLE_CACHES: dict[str, dict[str, Role | None]] = {COMPLETED: {}, ORDER_FINISHED: {}}


def known_roles(completion: str = COMPLETED) -> Mapping[str, Role | None]:
    """The detail-types classified so far and their roles (None: ignored), live: a loop
    over many envelopes (replay's) skips one of an ignored type without calling
    ``parse_envelope``, which would return None for it. Empty for an unknown
    ``completion`` (``parse_envelope`` then refuses it as before)."""
    return _ROLE_CACHES.get(completion, {})


def consumed_event_pattern(source: str, completion: str = COMPLETED) -> dict[str, Any]:
    """The EventBridge rule pattern: only the detail-types the service consumes."""
    if completion == ORDER_FINISHED:
        completions: list[str | dict[str, str]] = [ORDER_FINISHED_DETAIL_TYPE]
    else:
        completions = [
            LEGACY_COMPLETED_DETAIL_TYPE,
            {"wildcard": f"{TENANT_ORDER_PREFIX}*-COMPLETED"},
        ]
    cancellations: list[str | dict[str, str]] = [
        LEGACY_CANCELLED_DETAIL_TYPE,
        TIMED_OUT_DETAIL_TYPE,
        {"wildcard": f"{TENANT_ORDER_PREFIX}*-CANCELLED"},
    ]
    types: list[str | dict[str, str]] = [SUBMITTED_DETAIL_TYPE, *completions, *cancellations]
    # Exact names first, then wildcards: the order the rule has always listed them in.
    return {
        "source": [source],
        "detail-type": [t for t in types if isinstance(t, str)]
        + [t for t in types if not isinstance(t, str)],
    }
