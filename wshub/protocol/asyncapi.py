"""The AsyncAPI 3.0 document of ``/ws``, generated from the structs of :mod:`wshub.protocol`.

Every payload schema comes from ``msgspec.json.schema_components`` over the very structs the
server decodes client frames with and encodes server frames from, so the document cannot
drift from what the server accepts and sends. The only facts written here are the ones the
structs cannot carry: which reply answers which request, and the fields that the structs give
a placeholder default (``protocol.REQUIRED_FIELDS``) but that are required on the wire.
Pure: no I/O.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any, Final

import msgspec

from wshub import __version__, protocol

__all__ = ["REPLIES", "document", "served_host"]

REPLIES: Final[dict[type[msgspec.Struct], type[msgspec.Struct]]] = {
    protocol.Join: protocol.Joined,
    protocol.Leave: protocol.Left,
    protocol.Publish: protocol.Ack,
    protocol.Send: protocol.Ack,
    protocol.PresenceRequest: protocol.Presence,
    protocol.HistoryRequest: protocol.History,
    protocol.Ping: protocol.Pong,
    protocol.Auth: protocol.Welcome,
    protocol.Refresh: protocol.Ack,
}
"""The reply to each client frame; any of them may instead be answered with ``error``."""

_SCHEMAS: Final = "#/components/schemas/{name}"
_CHANNEL: Final = "#/channels/ws"

DESCRIPTION: Final = """\
wshub's WebSocket protocol, version 2, and the same stream over Server-Sent Events (`/sse`).
Every frame, either way, is one JSON object in a text frame, tagged by its `type`. A client
frame may carry an `id` (integer or string); the reply carries the same `id`. Errors keep the
connection open.

Identity: with auth configured, a JWT as `?token=`, as `Authorization: Bearer`, or (keeping
it out of URLs and logs) in an `auth` frame right after the upgrade, answered by `welcome`
(nothing else is served before it; a bad token or none within `--auth-timeout` closes with
4003). `refresh` replaces the token without a reconnect. A `join` may carry a subscription
token for that channel; the token claim `channels` and the HTTP API join a connection to
channels (`subscribed`) and take it out (`unsubscribed`). In open mode, `?user=NAME`.
Refused handshakes get an HTTP status before the upgrade (401, 403, 503 with
`Retry-After`). After a reconnect, `join` with `since` (the last offset and epoch seen)
replays what was missed, or answers `recovered: false` when that is no longer possible.
Every frame with an `id` is answered within a bound, even when the broker is slow:
`timeout` means the broker may have done it (retry a `publish` with the same
`idempotency_key`), `unavailable` that it was not done.

Without a WebSocket, `GET /sse?channel=C` (repeatable) streams the same server frames as
Server-Sent Events (`event:` the type, `data:` the frame), each position-moving event with an
`id:` that `Last-Event-ID` resumes from; `POST /sse/frame` takes `publish`, `send`, `presence`
and `history` and answers with their reply frame (see the OpenAPI document at /docs)."""

SSE_QUERY: Final = {
    "type": "object",
    "properties": {
        "channel": {
            "type": "array",
            "items": {"type": "string", "pattern": protocol.CHANNEL_PATTERN},
            "description": "The channels to join; the parameter repeats, one per channel.",
        },
        "token": {"type": "string", "description": "A JWT, when auth is configured."},
        "user": {"type": "string", "description": "The user id in open mode."},
        "last_event_id": {
            "type": "string",
            "description": "Resume from this event id, as the Last-Event-ID header does.",
        },
    },
}


def _tag(struct: type[msgspec.Struct]) -> str:
    tag = struct.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _summary(struct: type[msgspec.Struct]) -> str:
    return (struct.__doc__ or _tag(struct)).strip().splitlines()[0].replace("``", "`")


@cache
def _components() -> dict[str, Any]:
    _, schemas = msgspec.json.schema_components(
        protocol.CLIENT_FRAMES + protocol.SERVER_FRAMES, ref_template=_SCHEMAS
    )
    for struct in protocol.CLIENT_FRAMES:
        schema = schemas[struct.__name__]
        for field in protocol.REQUIRED_FIELDS[_tag(struct)]:
            # The struct's placeholder default only exists to answer a bad frame with its id.
            schema["properties"][field].pop("default", None)
            schema["required"].append(field)
    # ``history.messages`` is kept as raw JSON on the server, but is always message frames.
    schemas["History"]["properties"]["messages"]["items"] = {
        "$ref": _SCHEMAS.format(name="Message")
    }
    for schema in schemas.values():
        if "description" in schema:
            schema["description"] = schema["description"].replace("``", "`")
    return dict(schemas)


def _message(struct: type[msgspec.Struct]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": _tag(struct),
        "title": _tag(struct),
        "summary": _summary(struct),
        "contentType": "application/json",
        "payload": {"$ref": _SCHEMAS.format(name=struct.__name__)},
    }
    if "id" in struct.__struct_fields__:
        message["correlationId"] = {
            "description": "A reply carries the id of the frame it answers.",
            "location": "$message.payload#/id",
        }
    return message


def _ref(struct: type[msgspec.Struct]) -> dict[str, str]:
    return {"$ref": f"{_CHANNEL}/messages/{struct.__name__}"}


@cache
def _body() -> dict[str, Any]:
    frames = protocol.CLIENT_FRAMES + protocol.SERVER_FRAMES
    # ``welcome`` answers ``auth``, and is also pushed unasked when the token came in the URL.
    replies = (set(REPLIES.values()) - {protocol.Welcome}) | {protocol.Error}
    operations: dict[str, Any] = {}
    for request, reply in REPLIES.items():
        operations[_tag(request)] = {
            "action": "receive",
            "channel": {"$ref": _CHANNEL},
            "summary": _summary(request),
            "messages": [_ref(request)],
            "reply": {
                "channel": {"$ref": _CHANNEL},
                "messages": [_ref(reply), _ref(protocol.Error)],
            },
        }
    for event in protocol.SERVER_FRAMES:
        if event not in replies:
            operations[f"push_{_tag(event)}"] = {
                "action": "send",
                "channel": {"$ref": _CHANNEL},
                "summary": _summary(event),
                "messages": [_ref(event)],
            }
    operations["sse_events"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/sse"},
        "summary": "The server frames of an SSE stream, one event each.",
        "messages": [
            {"$ref": f"#/channels/sse/messages/{f.__name__}"} for f in protocol.SERVER_FRAMES
        ],
    }
    query = {
        "type": "object",
        "properties": {
            "token": {
                "type": "string",
                "description": "A JWT, when auth is configured (or send it in an auth frame).",
            },
            "user": {
                "type": "string",
                "pattern": protocol.USER_PATTERN,
                "description": "The user id in open mode (no auth configured).",
            },
        },
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "wshub WebSocket protocol",
            "version": __version__,
            "description": DESCRIPTION,
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "channels": {
            "ws": {
                "address": "/ws",
                "title": "The JSON protocol",
                "description": "One WebSocket per client; every frame is a JSON object.",
                "messages": {
                    f.__name__: {"$ref": f"#/components/messages/{f.__name__}"} for f in frames
                },
                "bindings": {"ws": {"method": "GET", "query": query, "bindingVersion": "0.1.0"}},
            },
            "sse": {
                "address": "/sse",
                "title": "The same stream over Server-Sent Events",
                "description": "One text/event-stream response per client; each event is one "
                "server frame (`event:` its type, `data:` its JSON).",
                "messages": {
                    f.__name__: {"$ref": f"#/components/messages/{f.__name__}"}
                    for f in protocol.SERVER_FRAMES
                },
                "bindings": {
                    "http": {"method": "GET", "query": SSE_QUERY, "bindingVersion": "0.3.0"}
                },
            },
        },
        "operations": operations,
        "components": {
            "messages": {f.__name__: _message(f) for f in frames},
            "schemas": _components(),
        },
    }


def served_host(server: tuple[str, int | None] | list[Any] | None) -> str:
    """``host:port`` of the socket a request arrived on (ASGI ``scope["server"]``).

    Never the request's ``Host`` header: a client chooses that, and a document naming the
    client's choice could point other readers (through a cache) at any server.
    """
    if not server:
        return "127.0.0.1:8000"
    host, port = str(server[0]), server[1]
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def document(host: str = "127.0.0.1:8000", secure: bool = False) -> dict[str, Any]:
    """The AsyncAPI document, with the server entry naming ``host``."""
    body = copy.deepcopy(_body())
    body["servers"] = {
        "wshub": {
            "host": host,
            "protocol": "wss" if secure else "ws",
            "description": "This wshub node.",
        }
    }
    return body
