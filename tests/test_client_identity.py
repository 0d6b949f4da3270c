"""The Python client's identity (PROTOCOL.md v2): the ``auth`` frame, token functions and
``refresh``, against real ``wshub serve`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import ServerFactory
from tests.identity_support import SECRET, token
from tests.support import connect
from wshub.client import Client, Message, Refused, ServerError, Stopped, expiry_of
from wshub.core.tokens import Claims, Signer

FORGER = Signer.from_secret("another-secret-" + "f" * 40)


class Recorder:
    """A TCP proxy that keeps every byte the client sent: its upgrade request in clear, and
    its frames (masked, so a token inside a frame never appears in clear)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = bytearray()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    @property
    def requests(self) -> list[bytes]:
        """The head of each upgrade request the client made."""
        return [bytes(part.split(b"\r\n\r\n")[0]) for part in self.sent.split(b"GET /")[1:]]

    async def __aenter__(self) -> Recorder:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        for src, dst, keep in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.create_task(self._pipe(src, dst, keep))
            self._tasks.add(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bool) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await src.read(65536):
                if keep:
                    self.sent += data
                dst.write(data)
                await dst.drain()
        dst.close()


class Minter:
    """A token function minting a fresh token for ``user`` on each call, keeping each."""

    def __init__(self, user: str, ttl: float, **claims: Any) -> None:
        self.user, self.ttl, self.claims = user, ttl, claims
        self.calls: list[str] = []

    async def __call__(self) -> str:
        self.calls.append(jwt := token(self.user, ttl=self.ttl, **self.claims))
        return jwt


@contextlib.asynccontextmanager
async def publishing(url: str, channel: str, gap: float = 0.005) -> AsyncIterator[list[int]]:
    """Publish 0, 1, 2, ... to ``channel`` from a client that is not ours, until the block
    ends; the offsets acknowledged."""
    acked: list[int] = []
    stopping = asyncio.Event()
    async with connect(url, token=token("pub", join=["*"], publish=["*"])) as pub:

        async def run() -> None:
            # Checked as well as cancelled: Python 3.11's wait_for (in pub.publish) can
            # swallow a cancellation that comes just as its reply does.
            while not stopping.is_set():
                acked.append((await pub.publish(channel, len(acked)))["offset"])
                await asyncio.sleep(gap)

        task = asyncio.create_task(run())
        try:
            yield acked
        finally:
            stopping.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until_offset(stream: AsyncIterator[Message], offset: int, got: list[int]) -> None:
    async with asyncio.timeout(20):
        while not got or got[-1] < offset:
            got.append((await anext(stream)).offset)


@pytest.mark.parametrize("auth", ["frame", "header"])
async def test_the_token_goes_in_the_auth_frame_unless_asked_for_the_header(
    make_server: ServerFactory, auth: str
) -> None:
    node = make_server("--jwt-secret", SECRET)
    jwt = token("ann", join=["a:*"])
    async with Recorder(node.port) as proxy:
        async with Client(proxy.url, token=jwt, auth=auth) as ann:  # type: ignore[arg-type]
            assert ann.user == "ann"
            assert ann.welcome.get("id") == ("auth" if auth == "frame" else None)
            await ann.join("a:b")
        (head,) = proxy.requests
    if auth == "frame":  # not in the URL, not in a header, nowhere in clear
        assert jwt.encode() not in proxy.sent and b"token" not in head.lower()
        assert b"authorization" not in head.lower()
    else:
        assert f"Authorization: Bearer {jwt}".encode() in head


async def test_a_token_function_is_asked_to_connect(make_server: ServerFactory) -> None:
    node = make_server("--jwt-secret", SECRET)
    fresh = Minter("ann", 3600)
    async with Client(node.url, token=fresh) as ann:
        assert ann.user == "ann" and len(fresh.calls) == 1

    async def nothing() -> None:
        return None

    with pytest.raises(Stopped) as stopped:
        await Client(node.url, token=nothing).connect()
    assert stopped.value.code == 4003 and "returned None" in stopped.value.reason


async def test_a_token_refused_in_the_auth_frame_says_why(make_server: ServerFactory) -> None:
    node = make_server("--jwt-secret", SECRET)
    forged = FORGER.sign(Claims("eve"))
    with pytest.raises(Refused) as refused:
        await Client(node.url, token=forged).connect()
    assert refused.value.code == 4003 and refused.value.status == 401
    assert "signature" in refused.value.reason


async def test_a_token_in_open_mode_is_not_needed_and_harms_nothing(
    make_server: ServerFactory,
) -> None:
    node = make_server()
    async with Client(node.url, user="oz", token=token("oz")) as oz:
        assert oz.user == "oz"
        await oz.ping()


async def test_refresh_before_exp_keeps_the_link_open_across_the_old_tokens_end(
    make_server: ServerFactory,
) -> None:
    node = make_server("--jwt-secret", SECRET)
    fresh = Minter("ann", 2, join=["r:*"], publish=["r:*"])
    refreshed: asyncio.Queue[float | None] = asyncio.Queue()
    async with Client(node.url, token=fresh, on_refresh=refreshed.put_nowait) as ann:
        first_end = ann.welcome["expires"]
        assert first_end == expiry_of(fresh.calls[0])
        first = await asyncio.wait_for(refreshed.get(), 10)
        assert first is not None and first > first_end
        # The second refresh comes at least 75 % of the new token's life (>= 1 s) after the
        # first, which came at most 90 % into the old one's (<= 2 s): after its end.
        await asyncio.wait_for(refreshed.get(), 10)
        assert time.time() > first_end
        await ann.join("r:x")
        assert await ann.publish("r:x", "still here") == 1
        assert ann.reconnects == 0 and ann.state == "open" and ann.stopped is None
        assert ann.token == fresh.calls[-1]
        assert ann.tokens.refreshes >= 2


async def test_refresh_racing_publishes_loses_and_repeats_nothing(
    make_server: ServerFactory,
) -> None:
    node = make_server("--jwt-secret", SECRET)
    fresh = Minter("ann", 2, join=["race:*"])
    refreshed: asyncio.Queue[float | None] = asyncio.Queue()
    async with Client(node.url, token=fresh, on_refresh=refreshed.put_nowait) as ann:
        stream = ann.subscribe("race:x")
        await ann.join("race:x")
        got: list[int] = []
        async with publishing(node.url, "race:x", gap=0.002) as acked:
            reading = asyncio.create_task(until_offset(stream, 10**9, got))
            for _ in range(2):  # two refreshes, each in the middle of the flow
                await asyncio.wait_for(refreshed.get(), 10)
        last = acked[-1]
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await until_offset(stream, last, got)
        # Up to one more than acknowledged: the publish cut short when the publisher stopped.
        assert got == list(range(1, got[-1] + 1)) and got[-1] >= last > 100
        assert ann.reconnects == 0


async def test_a_refused_refresh_is_reported_then_4001_asks_again_and_resumes(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wshub.client")
    node = make_server("--jwt-secret", SECRET)
    # First the token to connect with, then one for another user (the refresh: forbidden),
    # then, after the 4001 at the first one's end, a good one again.
    handed = iter(
        [
            token("amy", ttl=2, join=["renew:*"]),
            token("mallory", join=["renew:*"]),
            token("amy", join=["renew:*"]),
        ]
    )
    asked: list[float] = []

    async def next_token() -> str:
        asked.append(time.time())
        return next(handed)

    errors: list[Exception] = []
    async with Client(
        node.url, token=next_token, backoff_min=0.01, on_refresh_error=errors.append
    ) as amy:
        stream = amy.subscribe("renew:x")
        await amy.join("renew:x")
        got: list[int] = []
        async with publishing(node.url, "renew:x") as acked:
            async with asyncio.timeout(15):
                while amy.reconnects == 0:
                    await until_offset(stream, (got or [0])[-1] + 1, got)
            await until_offset(stream, acked[-1] + 5, got)
        assert isinstance(errors[0], ServerError) and errors[0].code == "forbidden"
        assert len(asked) == 3
        assert got == list(range(1, got[-1] + 1))  # resumed with since: none lost, none twice
        closes = [r.getMessage() for r in caplog.records if "closed (" in r.getMessage()]
        assert amy.stopped is None and amy.reconnects == 1, closes


async def test_4003_then_no_token_stops_with_4003(make_server: ServerFactory) -> None:
    node = make_server("--jwt-secret", SECRET)
    forged = FORGER.sign(Claims("bea"))
    # To connect; None for the refresh (the 4001 comes); a token that does not verify after
    # the 4001 (its auth frame is answered 4003); then none.
    handed = iter([token("bea", ttl=2), None, forged, None])

    async def next_token() -> str | None:
        return next(handed)

    async with Client(node.url, token=next_token, backoff_min=0.01) as bea:
        stopped = await asyncio.wait_for(bea.wait_stopped(), 15)
    assert stopped is not None and stopped.code == 4003
    assert "signature" in stopped.reason and "returned None" in stopped.reason
    assert next(handed, "all asked") == "all asked"


async def test_a_plain_string_token_cannot_be_refreshed_and_4001_says_so(
    make_server: ServerFactory,
) -> None:
    node = make_server("--jwt-secret", SECRET)
    async with Client(node.url, token=token("cy", ttl=1)) as cy:
        stopped = await asyncio.wait_for(cy.wait_stopped(), 10)
    assert stopped is not None and stopped.code == 4001
    assert "string token cannot be renewed" in stopped.reason
    assert cy.tokens.refreshes == 0
