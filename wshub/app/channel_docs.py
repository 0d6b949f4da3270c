"""Channel routes in the AsyncAPI document: each route a channel, with its parameters and the
JSON Schema of its payload, pydantic's schema of the route's model.

The protocol's own document (:mod:`wshub.protocol.asyncapi`) describes the frames on ``/ws``;
a route adds what travels inside them on its channels: the ``data`` of ``publish`` and
``message`` frames. Every payload is a ``$ref`` into ``components.schemas``, named
``data.<Model>``, so that a model called ``Message`` or ``Error`` cannot collide with the
protocol's frames.
"""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from wshub.app.channel_routes import ChannelRoute, ChannelRoutes

__all__ = ["add_routes", "channel_key"]

_SCHEMAS: Final = "#/components/schemas/data.{model}"
_ANY: Final = {"description": "Any JSON value: the route has no model."}


def channel_key(route: ChannelRoute) -> str:
    """The route's id in the document: ``orders:{order_id}`` is ``orders.order_id``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", route.pattern.replace("{", "").replace("}", "")
                  .replace(":", "."))  # fmt: skip


def _parameter(route: ChannelRoute, name: str) -> dict[str, Any]:
    """AsyncAPI 3 parameters are strings with an optional ``enum``: the checks' annotation of
    the parameter gives the enum and a description of its type."""
    for check in route.checks.values():
        for field in check.dependant.path_params:
            annotation = field.field_info.annotation
            if field.name == name and annotation is not None:
                schema = TypeAdapter(annotation).json_schema()
                parameter: dict[str, Any] = {
                    "description": field.field_info.description
                    or f"`{name}`: {schema.get('format') or schema.get('type', 'a string')}"
                }
                if "enum" in schema:
                    parameter["enum"] = [str(v) for v in schema["enum"]]
                return parameter
    return {"description": f"`{name}`: any part of a channel name between `:`"}


def _payloads(routes: list[ChannelRoute]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each route's payload schema, and the definitions they share, in one pydantic pass so
    that two models of one name get two names."""
    typed = [(i, r) for i, r in enumerate(routes) if r.adapter is not None]
    mode: JsonSchemaMode = "serialization"  # what subscribers receive
    inputs = [(i, mode, r.adapter) for i, r in typed if r.adapter is not None]
    found, definitions = TypeAdapter.json_schemas(inputs, ref_template=_SCHEMAS)
    schemas = {f"data.{name}": schema for name, schema in definitions.get("$defs", {}).items()}
    payloads: dict[str, Any] = {}
    for i, route in enumerate(routes):
        key = channel_key(route)
        schema = found.get((i, mode), _ANY)
        if "$ref" not in schema:  # e.g. list[Line]: named after the channel instead
            schemas[f"data.{key}"] = schema
            schema = {"$ref": _SCHEMAS.format(model=key)}
        payloads[key] = schema
    return payloads, schemas


def add_routes(document: dict[str, Any], routes: ChannelRoutes) -> dict[str, Any]:
    """``document`` with a channel, a message and two operations per route."""
    listed = list(routes)
    if not listed:
        return document
    payloads, schemas = _payloads(listed)
    document["components"]["schemas"].update(schemas)
    for route in listed:
        key = channel_key(route)
        document["components"]["messages"][key] = {
            "name": key,
            "title": route.pattern,
            "summary": f"The data of a publication on {route.pattern}",
            "contentType": "application/json",
            "payload": payloads[key],
        }
        document["channels"][key] = {
            "address": route.pattern,
            "title": route.pattern,
            "description": (
                (route.description + "\n\n" if route.description else "")
                + "A channel route: a wshub channel carried over `/ws`, joined with a `join` "
                "frame. Its messages are the `data` of `publish` frames sent to it and of "
                "`message` frames received from it."
            ),
            "parameters": {name: _parameter(route, name) for name in route.params},
            "messages": {"data": {"$ref": f"#/components/messages/{key}"}},
        }
        message = [{"$ref": f"#/channels/{key}/messages/data"}]
        document["operations"][f"{key}.publish"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": f"A client publishes to {route.pattern} (`publish`)",
            "messages": message,
        }
        document["operations"][f"{key}.message"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{key}"},
            "summary": f"Subscribers of {route.pattern} receive it (`message`)",
            "messages": message,
        }
    return document
