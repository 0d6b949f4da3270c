"""The HTTP API through which a backend publishes, sends and inspects (``--api-key``).

Every route goes through the :class:`~wshub.brokers.Broker` alone, never through this node's
own connections, so a request answers the same on any node of a cluster sharing a broker.

Requests carry ``Authorization: apikey KEY`` (:mod:`wshub.app.api_key`). The key is checked
before the body is read, so a caller without it learns nothing, not even whether its body would
have been valid.
Bodies that are not JSON at all get 422 like any other invalid input (FastAPI alone answers
400 for a body it cannot parse, such as invalid UTF-8 or nesting deeper than Python's stack),
and a 422 names the fields without echoing what was sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, JsonValue
from starlette.exceptions import HTTPException as StarletteHTTPException

from wshub import protocol
from wshub.app.api_key import ApiKey
from wshub.app.hub import Hub
from wshub.brokers import BrokerTimeout, BrokerUnavailable
from wshub.core import serving
from wshub.core.channel_rules import InvalidData

__all__ = ["build_api"]

MAX_OFFSET = 2**63 - 1
"""Offsets are 64-bit in every broker; a larger ``since`` is invalid input, not a crash."""

ChannelName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=protocol.CHANNEL_PATTERN,
        description="A channel name: 1 to 128 of `A-Z a-z 0-9 _ - . : @`.",
        examples=["orders:42"],
    ),
]
UserName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=protocol.USER_PATTERN,
        description="A user id: 1 to 100 of `A-Z a-z 0-9 _ - . : @`.",
        examples=["alice"],
    ),
]
ChannelPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        pattern=protocol.CHANNEL_PATTERN,
        description="A channel name: 1 to 128 of `A-Z a-z 0-9 _ - . : @`.",
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublishRequest(_Body):
    channel: ChannelName
    data: JsonValue = Field(description="Any JSON value; subscribers receive it as `data`.")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description=(
            "1 to 64 characters. A repeat to the same channel with the same key within "
            "`--idempotency-ttl` seconds is not published again: it is answered with the "
            "first one's offset and epoch, so a 503 or 504 may be retried safely."
        ),
    )


class PublishReply(BaseModel):
    offset: int = Field(description="The message's offset in its channel.")
    epoch: str = Field(description="The channel's epoch the offset belongs to.")


class SendRequest(_Body):
    to: UserName
    data: JsonValue = Field(description="Any JSON value, delivered in a `direct` frame.")


class DisconnectRequest(_Body):
    user: UserName


class PlacementRequest(_Body):
    user: UserName
    channel: ChannelName


class ChannelCount(BaseModel):
    channel: str
    subscribers: int = Field(description="Joined connections, cluster-wide.")


class ChannelsReply(BaseModel):
    channels: list[ChannelCount]


class Member(BaseModel):
    """A user in the channel: their latest join's `meta`, and how many of their connections
    joined. The same object as the `members` of a WebSocket `presence` reply."""

    user: str
    meta: JsonValue
    connections: int


class PresenceReply(BaseModel):
    channel: str
    members: list[Member]


class HistoryReply(BaseModel):
    channel: str
    epoch: str
    messages: list[dict[str, JsonValue]] = Field(
        description="`message` frames, oldest first, exactly as WebSocket clients get them."
    )


class _Presence(msgspec.Struct):
    channel: str
    members: list[protocol.Member]


class _History(msgspec.Struct):
    channel: str
    epoch: str
    messages: list[msgspec.Raw]


def _json_data(value: JsonValue) -> bytes:
    """``data`` as JSON text. NaN and Infinity parse in Python but are not JSON: refused."""
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
    except (ValueError, RecursionError) as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "data"), "msg": str(exc), "input": None}]
        ) from None


def _unavailable() -> HTTPException:
    return HTTPException(503, "broker unreachable, retry later", headers={"Retry-After": "1"})


def _timeout(done: str = "published") -> HTTPException:
    retry = "; retry with the same idempotency_key" if done == "published" else ""
    return HTTPException(
        504, f"the broker did not confirm in time: it may or may not have been {done}{retry}"
    )


def invalid(errors: Sequence[Any]) -> JSONResponse:
    """A 422 naming each field, without echoing the input.

    FastAPI's own handler returns the offending ``input``, which can be anything the client
    sent, NaN included, and then fails to render it as JSON: a 500 for a bad request.
    """
    detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in errors]
    return JSONResponse({"detail": detail}, status_code=422)


_NOT_JSON = (
    "send the body as JSON with 'Content-Type: application/json' "
    """(curl: --json '{...}', or -H 'Content-Type: application/json' -d '{...}')"""
)


def _is_json(request: Request) -> bool:
    """Whether the body is declared JSON: ``curl -d`` alone sends a form, not JSON."""
    kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def build_api(hub: Hub, api_key: str) -> APIRouter:
    """The ``/api`` routes, guarded by ``api_key``."""
    guard = ApiKey(api_key)

    class ApiRoute(APIRoute):
        """Checks the key before FastAPI reads the body; any unparsable body is a 422."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                await guard(request)  # FastAPI would run it after reading the body
                if request.method == "POST" and not _is_json(request):
                    return JSONResponse({"detail": _NOT_JSON}, status_code=415)
                try:
                    return await handler(request)
                except RequestValidationError as exc:
                    return invalid(exc.errors())
                except StarletteHTTPException as exc:  # FastAPI raises Starlette's
                    if exc.status_code != 400:
                        raise
                    return invalid(
                        [{"type": "json_invalid", "loc": ("body",), "msg": "not parseable JSON"}]
                    )

            return route

    # ApiRoute has checked the key already; as a dependency it documents it in /docs.
    api = APIRouter(
        prefix="/api",
        tags=["HTTP API"],
        route_class=ApiRoute,
        dependencies=[Security(guard)],
    )

    @api.post("/publish")
    async def publish(body: PublishRequest) -> PublishReply:
        """Publish to a channel. Subscribers get a `message` with `from: null`.

        503: nothing was published. 504: the broker did not confirm in time, and the message
        may or may not have been published; retrying with the same `idempotency_key` makes
        sure it is published once.
        """
        data = _json_data(body.data)
        match = hub.channel_routes.find(body.channel)
        if match is not None:  # its route's model: a 422 naming the fields, as for the body
            try:
                data = match.route.validate_json(body.channel, data, ("body", "data"))
            except InvalidData as exc:
                raise RequestValidationError(exc.errors) from None
        timeout = hub.settings.reply_timeout
        try:
            await hub.start()
            # Bounded like a client frame: a stalled broker gets a 504 or 503 in time.
            publishing = hub.publish_raw(body.channel, data, None, body.idempotency_key)
            pub = await serving.within(serving.deadline_in(timeout), timeout, publishing)
        except BrokerTimeout:
            raise _timeout() from None
        except BrokerUnavailable:
            raise _unavailable() from None
        return PublishReply(offset=pub.offset, epoch=pub.epoch)

    @api.post("/send", status_code=204)
    async def send(body: SendRequest) -> None:
        """Send a `direct` message (with `from: null`) to every connection of a user."""
        data = _json_data(body.data)
        try:
            await hub.send(body.to, msgspec.Raw(data))
        except BrokerTimeout:  # it may have been delivered
            raise _timeout("delivered") from None
        except BrokerUnavailable:
            raise _unavailable() from None

    @api.get("/channels")
    async def channels() -> ChannelsReply:
        """Channels with at least one joined connection, cluster-wide, by name."""
        try:
            counts = await hub.ops.channels()
        except BrokerUnavailable:
            raise _unavailable() from None
        return ChannelsReply(
            channels=[
                ChannelCount(channel=name, subscribers=n)
                for name, n in sorted(counts.items())
                if protocol.is_channel_name(name)
            ]
        )

    @api.get("/channels/{channel}/presence", response_model=PresenceReply)
    async def presence(channel: ChannelPath) -> Response:
        """Who is in a channel, cluster-wide, with their `meta` and connection counts."""
        try:
            members = await hub.broker.presence(channel)
        except BrokerUnavailable:
            raise _unavailable() from None
        reply = _Presence(
            channel,
            [protocol.Member(m.user, msgspec.Raw(m.meta), m.connections) for m in members],
        )
        return Response(msgspec.json.encode(reply), media_type="application/json")

    @api.get("/channels/{channel}/history", response_model=HistoryReply)
    async def history(
        channel: ChannelPath,
        since: Annotated[
            int | None,
            Query(ge=0, le=MAX_OFFSET, description="Return messages after this offset."),
        ] = None,
        epoch: Annotated[
            str | None,
            Query(min_length=1, description="The epoch `since` was seen in; needs `since`."),
        ] = None,
        limit: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="At most this many.")] = 100,
    ) -> Response:
        """A page of a channel's history, as the `history` frame gives it.

        Without `since`: the last `limit` messages. With `since` and `epoch` (both or neither):
        the first `limit` messages after `since`, or the last ones with the current epoch when
        `epoch` is no longer current, which tells the caller its position is void.
        """
        if (since is None) != (epoch is None):
            missing = "epoch" if epoch is None else "since"
            raise RequestValidationError(
                [
                    {
                        "type": "missing",
                        "loc": ("query", missing),
                        "msg": "since and epoch go together",
                        "input": None,
                    }
                ]
            )
        try:
            current, pubs = await hub.broker.history(channel, since, epoch, limit)
        except BrokerUnavailable:
            raise _unavailable() from None
        reply = _History(channel, current, [msgspec.Raw(p.frame.text) for p in pubs])
        return Response(msgspec.json.encode(reply), media_type="application/json")

    @api.post("/disconnect", status_code=204)
    async def disconnect(body: DisconnectRequest) -> None:
        """Close every connection of a user on every node, with close code 1008."""
        try:
            await hub.ops.kick(body.user)
        except BrokerUnavailable:
            raise _unavailable() from None

    async def place(action: Callable[[str, str], Coroutine[Any, Any, None]], body: Any) -> None:
        try:
            await action(body.user, body.channel)
        except BrokerTimeout:
            raise _timeout("told to every node") from None
        except BrokerUnavailable:
            raise _unavailable() from None

    @api.post("/subscribe", status_code=204)
    async def subscribe(body: PlacementRequest) -> None:
        """Join every connection of a user, on every node, to a channel, whatever its
        permissions: each gets `subscribed`, then the channel's messages. Answered once every
        node has been told; a user with no connection is no error (nothing happens)."""
        await place(hub.subscribe, body)

    @api.post("/unsubscribe", status_code=204)
    async def unsubscribe(body: PlacementRequest) -> None:
        """Take every connection of a user, on every node, out of a channel: each gets
        `unsubscribed` with reason `server`. Answered once every node has been told."""
        await place(hub.unsubscribe, body)

    return api
