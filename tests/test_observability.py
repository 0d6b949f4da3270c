"""/metrics, /admin/stats and /asyncapi.json on real server processes."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.conftest import ServerFactory
from tests.support import ROOT, ServerProcess, connect, http_get
from wshub import protocol
from wshub.protocol import asyncapi

NODE_DIR = ROOT / ".venv" / "node"
VALIDATOR = ROOT / "tests" / "js" / "validate_asyncapi.mjs"


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample's value from the Prometheus text format; 0 when absent."""
    pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.M)
    return float(match[1]) if match else 0.0


async def scrape(server: ServerProcess) -> str:
    status, body = await http_get(f"{server.http}/metrics")
    assert status == 200
    return body.decode()


async def test_metrics_count_connections_joins_messages_errors_and_refusals(
    make_server: ServerFactory,
) -> None:
    node = make_server("--max-connections", "2")
    async with connect(node.url, "ann") as ann, connect(node.url, "ben") as ben:
        await ann.join("m:room")
        await ben.join("m:room")
        for n in range(3):
            await ann.publish("m:room", n)
        await ben.messages(3)
        await ann.request({"type": "send", "to": "ben", "data": "psst"})
        await ben.expect("direct")
        assert (await ann.request({"type": "nope"}))["code"] == "unknown_type"
        assert (await ann.request({"type": "leave", "channel": "m:never"}))["code"] == "not_joined"
        text = await scrape(node)
        assert metric(text, "wshub_connections") == 2
        assert metric(text, "wshub_connections_opened_total") == 2
        assert metric(text, "wshub_joins_total") == 2
        assert metric(text, "wshub_messages_published_total") == 3
        assert metric(text, "wshub_messages_fanned_out_total") == 6  # 3 messages x 2 subscribers
        assert metric(text, "wshub_direct_sent_total") == 1
        assert metric(text, "wshub_direct_fanned_out_total") == 1
        assert metric(text, "wshub_errors_total", 'code="unknown_type"') == 1
        assert metric(text, "wshub_errors_total", 'code="not_joined"') == 1
        assert metric(text, "wshub_delivery_latency_seconds_count") == 3
        assert metric(text, "wshub_broker_round_trip_seconds_count", 'operation="publish"') == 3
        assert "wshub_queued_frames" in text
        assert "wshub_queue_depth_max" in text
        try:
            async with connect(node.url, "cal"):
                pass
        except Exception:
            pass
        text = await scrape(node)
        assert metric(text, "wshub_handshakes_refused_total", 'status="503"') == 1
    text = await scrape(node)
    assert metric(text, "wshub_connections") == 0


async def test_slow_consumer_closes_are_counted(make_server: ServerFactory) -> None:
    node = make_server("--queue-size", "4")
    async with connect(node.url, "slow", max_queue=1) as slow, connect(node.url, "fast") as fast:
        await slow.join("m:flood")
        await fast.publish("m:flood", "x" * 60_000)
        for _ in range(200):
            await fast.request({"type": "publish", "channel": "m:flood", "data": "x" * 60_000})
            text = await scrape(node)
            if metric(text, "wshub_slow_consumer_closes_total") == 1:
                break
        else:
            pytest.fail("the slow consumer was never closed")
        assert (await http_get(f"{node.http}/healthz"))[0] == 200


async def test_metrics_merge_worker_files_in_multiprocess_mode(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    node = make_server(PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    async with connect(node.url, "mp") as mp:
        await mp.join("m:mp")
        await mp.publish("m:mp", 1)
    text = await scrape(node)
    assert metric(text, "wshub_messages_published_total") == 1
    assert metric(text, "wshub_joins_total") == 1
    files = await asyncio.to_thread(lambda: list(tmp_path.glob("*.db")))
    assert files, "prometheus-client wrote no per-process files"


def stats(node: ServerProcess, header: str | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{node.http}/admin/stats")
    if header:
        request.add_header("Authorization", header)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def test_admin_stats_need_the_api_key(make_server: ServerFactory) -> None:
    keyless = make_server()
    assert stats(keyless, "apikey anything")[0] == 403
    node = make_server(WSHUB_API_KEY="s3cret")
    assert stats(node, None)[0] == 401
    assert stats(node, "apikey wrong")[0] == 401
    assert stats(node, "Bearer s3cret")[0] == 401
    status, body = stats(node, "apikey s3cret")
    assert status == 200
    assert body["channels"] == []
    async with connect(node.url, "ann") as ann, connect(node.url, "ben") as ben:
        await ann.join("a:one")
        await ben.join("a:one")
        await ben.join("a:two")
        await ann.publish("a:one", 1)
        _, body = stats(node, "APIKEY s3cret")
    assert body["channels"] == [
        {"channel": "a:one", "subscribers": 2},
        {"channel": "a:two", "subscribers": 1},
    ]
    assert body["channels_total"] == 2
    (me,) = body["nodes"]
    assert me["connections"] == 2
    assert me["users"] == 2
    assert (me["published"], me["fanned_out"], me["joins"]) == (1, 2, 3)
    assert me["broker"] == "memory"


async def test_pages_and_static_client_are_served(server: ServerProcess) -> None:
    for path, marker in [
        ("/", b"wshub chat"),
        ("/admin", b"wshub dashboard"),
        ("/asyncapi", b"WebSocket protocol"),
        ("/static/wshub.js", b"export class WshubClient"),
    ]:
        status, body = await http_get(server.http + path)
        assert status == 200, path
        assert marker in body, path
    status, body = await http_get(f"{server.http}/openapi.json")
    assert "[/asyncapi](/asyncapi)" in json.loads(body)["info"]["description"]


# --- AsyncAPI -----------------------------------------------------------------------------------


def test_asyncapi_schemas_are_the_protocol_structs() -> None:
    doc = asyncapi.document()
    schemas = doc["components"]["schemas"]
    _, generated = msgspec.json.schema_components(
        protocol.CLIENT_FRAMES + protocol.SERVER_FRAMES,
        ref_template="#/components/schemas/{name}",
    )
    assert set(schemas) == set(generated)
    for struct in protocol.CLIENT_FRAMES:
        tag = struct.__struct_config__.tag
        schema = schemas[struct.__name__]
        assert schema["properties"]["type"] == {"enum": [tag]}
        assert set(protocol.REQUIRED_FIELDS[str(tag)]) <= set(schema["required"])
        assert doc["operations"][tag]["action"] == "receive"
    assert schemas["Message"]["properties"]["from"] == generated["Message"]["properties"]["from"]
    assert doc["operations"]["push_message"]["action"] == "send"


@pytest.fixture(scope="session")
def asyncapi_parser() -> Path:
    """The real npm @asyncapi/parser, installed once into .venv/node."""
    if not (NODE_DIR / "node_modules" / "@asyncapi" / "parser").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to validate the AsyncAPI document"
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--silent",
             "@asyncapi/parser@3"],
            check=True,
            timeout=300,
        )  # fmt: skip
    return NODE_DIR / "node_modules"


def test_served_asyncapi_document_passes_the_asyncapi_parser(
    server: ServerProcess, asyncapi_parser: Path
) -> None:
    with urllib.request.urlopen(f"{server.http}/asyncapi.json", timeout=5) as resp:
        body = resp.read()
    node = shutil.which("node")
    assert node
    result = subprocess.run(
        [node, str(VALIDATOR), str(asyncapi_parser)],
        input=body,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    problems = [d for d in report["diagnostics"] if d["severity"] <= 1]  # 0 error, 1 warning
    assert report["valid"], report["diagnostics"]
    assert problems == []
    assert report["version"] == "3.0.0"
    ops = {op["id"]: op for op in report["operations"]}
    assert ops["join"]["replies"] == ["joined", "error"]
    assert ops["publish"]["replies"] == ["ack", "error"]
    assert ops["push_member_left"]["messages"] == ["member_left"]
    assert set(report["messages"]) >= {"join", "welcome", "message", "direct", "pong"}
    assert json.loads(body)["servers"]["wshub"]["host"] == f"127.0.0.1:{server.port}"
