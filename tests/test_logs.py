"""Logs: one line per connection open and close, JSON or text, nothing secret, no floods."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.conftest import ServerFactory
from tests.support import connect
from wshub.cli.logs import JsonFormatter, RateLimit, Scrub, TextFormatter


def record(
    msg: str, *args: object, level: int = logging.WARNING, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord("wshub.test", level, __file__, 1, msg, args or None, None)
    rec.__dict__.update(extra)
    return rec


def test_warnings_pass_a_token_bucket_per_template_and_report_what_was_dropped() -> None:
    limit = RateLimit(rate=1.0, burst=3)
    now = [100.0]
    limit.clock = lambda: now[0]
    passed = [limit.filter(record("flood from %s", i)) for i in range(10)]
    assert passed == [True] * 3 + [False] * 7
    assert limit.filter(record("another warning"))  # a different template has its own bucket
    assert limit.filter(record("x", level=logging.INFO))  # info is never limited
    now[0] += 1.0
    rec = record("flood from %s", 11)
    assert limit.filter(rec)
    assert rec.__dict__["suppressed"] == 7
    assert not limit.filter(record("flood from %s", 12))


def test_scrub_masks_tokens_and_drops_uvicorns_handshake_lines() -> None:
    scrub = Scrub()
    rec = record('%s - "WebSocket %s" %d', "1.2.3.4:5", "/ws?user=a&token=eyJ.secret.sig", 401)
    assert scrub.filter(rec)
    assert rec.getMessage() == '1.2.3.4:5 - "WebSocket /ws?user=a&token=***" 401'
    accepted = record('%s - "WebSocket %s" [accepted]', "1.2.3.4:5", "/ws", level=logging.INFO)
    accepted.name = "uvicorn.error"
    assert not scrub.filter(accepted)


def test_formats_carry_the_fields() -> None:
    rec = record("connection closed", level=logging.INFO, code=1001, duration=1.5, user="ann b")
    line = json.loads(JsonFormatter().format(rec))
    assert (line["message"], line["code"], line["duration"], line["level"]) == (
        "connection closed",
        1001,
        1.5,
        "info",
    )
    assert line["ts"].endswith("Z")
    text = TextFormatter().format(rec)
    assert text.endswith('wshub.test: connection closed code=1001 duration=1.5 user="ann b"')


async def test_json_lines_per_connection_without_bodies_or_tokens(
    make_server: ServerFactory,
) -> None:
    node = make_server("--log-format", "json", "--log-level", "info")
    async with connect(node.url, "alice", token="SECRET-TOKEN-1") as alice:
        await alice.join("log:room")
        await alice.publish("log:room", {"text": "BODY-NEVER-LOGGED"})
        await alice.send({"type": "send", "to": "bob", "data": "DIRECT-NEVER-LOGGED"})
    with pytest.raises(InvalidStatus):
        await websockets.connect(f"{node.url}/ws?user=bad%20name&token=SECRET-TOKEN-2")
    deadline = time.monotonic() + 5
    while '"event": "close"' not in node.log():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    text = node.log()
    for secret in ("SECRET-TOKEN-1", "SECRET-TOKEN-2", "BODY-NEVER-LOGGED", "DIRECT-NEVER"):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    opened = [x for x in lines if x.get("event") == "open"]
    closed = [x for x in lines if x.get("event") == "close"]
    assert len(opened) == len(closed) == 1
    assert opened[0]["user"] == "alice" and opened[0]["peer"].startswith("127.0.0.1:")
    assert closed[0]["session"] == opened[0]["session"]
    assert (closed[0]["code"], closed[0]["reason"], closed[0]["by"]) == (1000, "normal", "client")
    assert 0 < closed[0]["duration"] < 10
    refused = [x for x in lines if x.get("event") == "refused"]
    assert [(x["status"], x["path"], x["level"]) for x in refused] == [(400, "/ws", "info")]
