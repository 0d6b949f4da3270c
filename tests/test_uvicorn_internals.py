"""The start-up check of the uvicorn internals ``wshub serve`` builds on
(wshub/transport/uvicorn_internals.py): the installed uvicorn passes; modules with one part
taken out, or an upgrade handed on otherwise, are named; the failure stops ``wshub serve``
with the tested range."""

from __future__ import annotations

import asyncio
import importlib
import logging
import subprocess
import sys
import tomllib
import types
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.websockets import websockets_sansio_impl

from tests.support import ROOT, free_port
from wshub.transport.uvicorn_internals import (
    TESTED,
    check_uvicorn,
    in_tested_range,
    missing_internals,
)


def loader(**replaced: Any) -> Any:
    """import_module, with the modules named (by their last part) replaced."""

    def load(name: str) -> Any:
        return replaced.get(name.rpartition(".")[2]) or importlib.import_module(name)

    return load


def without(module: types.ModuleType, name: str) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{k: v for k, v in vars(module).items() if k != name})


def test_the_installed_uvicorn_has_everything(caplog: pytest.LogCaptureFixture) -> None:
    assert missing_internals() == []
    with caplog.at_level(logging.WARNING):
        assert check_uvicorn() is None
    assert caplog.records == []


def test_the_tested_range_is_pyprojects() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"uvicorn[standard]{TESTED}" in project["dependencies"]
    assert in_tested_range(uvicorn.__version__)
    low, high = (bound.lstrip("<>=") for bound in TESTED.split(","))
    assert in_tested_range(low) and in_tested_range(high)
    assert not in_tested_range("0.52.0") and not in_tested_range("0.54.1")


def test_a_protocol_without_its_own_flow_control_is_named() -> None:
    # What uvicorn 0.52.0 looks like: pause_writing and resume_writing are asyncio's no-ops.
    class Older(websockets_sansio_impl.WebSocketsSansIOProtocol):
        pause_writing = asyncio.Protocol.pause_writing
        resume_writing = asyncio.Protocol.resume_writing

    sansio = types.SimpleNamespace(WebSocketsSansIOProtocol=Older)
    assert missing_internals(loader(websockets_sansio_impl=sansio)) == [
        "WebSocketsSansIOProtocol.pause_writing",
        "WebSocketsSansIOProtocol.resume_writing",
    ]


def test_a_missing_class_table_or_flag_is_named() -> None:
    assert missing_internals(loader(httptools_impl=without(httptools_impl, "STATUS_LINE"))) == [
        f"STATUS_LINE[{status}]" for status in (400, 408, 414, 431)
    ]
    gone = without(httptools_impl, "HttpToolsProtocol")
    assert missing_internals(loader(httptools_impl=gone)) == ["HttpToolsProtocol"]

    class Cycle:  # a cycle that no longer records a disconnect
        def __init__(self) -> None:
            self.response_started = self.response_complete = False
            self.message_event = asyncio.Event()

    cycle = types.SimpleNamespace(**{**vars(httptools_impl), "RequestResponseCycle": Cycle})
    assert missing_internals(loader(httptools_impl=cycle)) == ["RequestResponseCycle.disconnected"]


def test_a_missing_module_is_named() -> None:
    def load(name: str) -> Any:
        if name == "uvicorn.middleware.proxy_headers":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return importlib.import_module(name)

    assert missing_internals(load) == ["uvicorn.middleware.proxy_headers"]


class SplitHandOff(httptools_impl.HttpToolsProtocol):
    """An upgrade handed on in two writes: WshubTransport reads the path from the first."""

    def handle_websocket_upgrade(self) -> None:
        self.connections.discard(self)
        lines = [b"%s %s HTTP/1.1\r\n" % (self.scope["method"].encode(), self.url)]
        lines += [b"%s: %s\r\n" % header for header in self.scope["headers"]] + [b"\r\n"]
        protocol = self.ws_protocol_class(  # type: ignore[call-arg, misc]
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        protocol.data_received(lines[0])
        protocol.data_received(b"".join(lines[1:]))
        self.transport.set_protocol(protocol)


class NoAppState(httptools_impl.HttpToolsProtocol):
    """An upgrade that builds the ws class without its app state (as uvicorn once did)."""

    def handle_websocket_upgrade(self) -> None:
        protocol = self.ws_protocol_class(config=self.config, server_state=self.server_state)  # type: ignore[call-arg, misc]
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)


def test_an_upgrade_handed_on_otherwise_is_named() -> None:
    split = types.SimpleNamespace(**{**vars(httptools_impl), "HttpToolsProtocol": SplitHandOff})
    assert missing_internals(loader(httptools_impl=split)) == [
        "the upgrade request handed on whole, in one data_received"
    ]
    older = types.SimpleNamespace(**{**vars(httptools_impl), "HttpToolsProtocol": NoAppState})
    assert missing_internals(loader(httptools_impl=older)) == [
        "the ws class built with config, server_state, app_state"
    ]


def test_the_refusal_names_what_is_missing_and_the_range() -> None:
    gone = without(httptools_impl, "HttpToolsProtocol")
    problem = check_uvicorn(loader(httptools_impl=gone), version="0.60.0")
    assert problem is not None
    assert problem.startswith("uvicorn 0.60.0 lacks what wshub's transport builds on")
    assert "(HttpToolsProtocol)" in problem
    assert f"pip install 'uvicorn[standard]{TESTED}'" in problem


def test_a_release_outside_the_range_with_everything_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert check_uvicorn(version="0.99.0") is None
    (record,) = caplog.records
    assert "uvicorn 0.99.0 is outside the range" in record.getMessage()
    assert TESTED in record.getMessage()


def test_wshub_serve_stops_at_start_on_a_uvicorn_that_lacks_a_part() -> None:
    # A real `wshub serve` process on a uvicorn whose sans-I/O protocol lost its shutdown,
    # taken out before the command runs, as an install of another uvicorn release would.
    code = (
        "from uvicorn.protocols.websockets import websockets_sansio_impl as m\n"
        "del m.WebSocketsSansIOProtocol.shutdown\n"
        "from wshub.cli.main import app\n"
        f"app(['serve', '--port', '{free_port()}'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 3, done.stderr
    assert "WebSocketsSansIOProtocol.shutdown" in done.stderr
    assert f"uvicorn{TESTED}" in done.stderr
