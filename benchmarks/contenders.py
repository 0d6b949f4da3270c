"""The servers compared by ``benchmarks/compare.py``: how to start each one and how the load
generator speaks to it (a :class:`~wshub.bench.Dialect`).

Each delivers the publisher's payload to every receiver in its room. What they wrap it in
differs, and is part of what each costs:

- wshub: the full protocol, a ``message`` frame with channel, offset, epoch, sender and server
  time (history and presence on, as ``wshub serve`` runs by default);
- FastAPI tutorial: ``Client says: <payload>``, also sent to the publisher, which gets
  ``You wrote: ...`` first (N + 2 sends per publication);
- python-socketio: ``42["message",<payload re-serialised>]``;
- broadcaster, ``websockets.broadcast()``, Node ``ws``: the payload as is.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from wshub.bench import WSHUB, Dialect, Step

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = Path(__file__).resolve().parent / "peers" / "node_ws"

ROOM = Dialect(
    name="room",
    receiver_path="/ws?room={channel}",
    publisher_path="/ws?room={channel}&pub=1",
    join=(Step(expect='"type":"joined"'),),
    greet=(),
    publish="{data}",
)

TUTORIAL = Dialect(
    name="fastapi-tutorial",
    receiver_path="/ws",
    publisher_path="/ws",
    join=(),
    greet=(),
    publish="{data}",
)

# Engine.IO v4 over a WebSocket: open packet "0{...}", namespace connect "40", events "42[...]",
# acknowledged events "42<id>[...]" answered "43<id>[...]"; the server pings "2", we answer "3".
SOCKETIO = Dialect(
    name="socket.io",
    receiver_path="/socket.io/?EIO=4&transport=websocket",
    publisher_path="/socket.io/?EIO=4&transport=websocket",
    join=(
        Step(expect="0{{"),
        Step(send="40", expect="40"),
        Step(send='421["join","{channel}"]', expect="431"),
    ),
    greet=(Step(expect="0{{"), Step(send="40", expect="40")),
    publish='42["publish","{channel}",{data}]',
    keepalive=("2", "3"),
)


@dataclass(frozen=True)
class Contender:
    name: str
    label: str
    dialect: Dialect
    command: tuple[str, ...]  # "{port}" is replaced

    def argv(self, port: int) -> list[str]:
        return [part.replace("{port}", str(port)) for part in self.command]


def _wshub(*flags: str) -> tuple[str, ...]:
    return (
        sys.executable,
        *("-m", "wshub", "serve", "--port", "{port}", "--log-level", "warning"),
        *("--max-connections", "1000000", *flags),
    )


def _uvicorn(app: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "uvicorn", app, "--port", "{port}", "--log-level", "warning")


CONTENDERS = (
    Contender(
        "wshub",
        "wshub (`wshub serve`)",
        WSHUB,
        _wshub(),
    ),
    Contender(
        "wshub-asgi",
        "wshub, ASGI path (`--no-fast-path`)",
        WSHUB,
        _wshub("--no-fast-path"),
    ),
    Contender(
        "tutorial",
        "FastAPI tutorial (sequential `await send`)",
        TUTORIAL,
        _uvicorn("benchmarks.peers.naive_fastapi:app"),
    ),
    Contender(
        "socketio",
        "python-socketio (ASGI, uvicorn)",
        SOCKETIO,
        _uvicorn("benchmarks.peers.socketio_server:app"),
    ),
    Contender(
        "broadcaster",
        "FastAPI + broadcaster (memory)",
        ROOM,
        _uvicorn("benchmarks.peers.broadcaster_app:app"),
    ),
    Contender(
        "websockets",
        "`websockets.broadcast()`",
        ROOM,
        (sys.executable, "-m", "benchmarks.peers.websockets_broadcast", "{port}"),
    ),
    Contender(
        "node-ws",
        "Node `ws` (frame built once)",
        ROOM,
        ("node", str(NODE_DIR / "server.js"), "{port}"),
    ),
)
