"""The start-up check of the uvicorn internals that wshub's WebSocket protocol relies on."""

from __future__ import annotations

import asyncio
import logging

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from wshub.transport.uvicorn_check import WSHUB_PROTOCOL, missing_internals, ws_protocol


def test_the_installed_uvicorn_has_everything(caplog: pytest.LogCaptureFixture) -> None:
    assert missing_internals() == []
    with caplog.at_level(logging.WARNING):
        assert ws_protocol() == WSHUB_PROTOCOL
    assert caplog.records == []


def test_a_uvicorn_without_flow_control_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # What uvicorn 0.52.0 looks like: no pause_writing/resume_writing of its own.
    monkeypatch.setattr(WebSocketsSansIOProtocol, "pause_writing", asyncio.Protocol.pause_writing)
    monkeypatch.setattr(WebSocketsSansIOProtocol, "resume_writing", asyncio.Protocol.resume_writing)
    assert missing_internals() == [
        "WebSocketsSansIOProtocol.pause_writing",
        "WebSocketsSansIOProtocol.resume_writing",
    ]
    with caplog.at_level(logging.WARNING):
        assert ws_protocol() == "auto"
    assert len(caplog.records) == 1
    assert "pause_writing" in caplog.records[0].getMessage()
    assert "without the fast path" in caplog.records[0].getMessage()


def test_a_missing_attribute_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    init = WebSocketsSansIOProtocol.__init__

    def older_init(self: WebSocketsSansIOProtocol, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        del self.disconnected  # as in uvicorn 0.52.0

    monkeypatch.setattr(WebSocketsSansIOProtocol, "__init__", older_init)
    assert missing_internals() == ["WebSocketsSansIOProtocol.disconnected"]
