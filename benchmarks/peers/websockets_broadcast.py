"""The ``websockets`` library's own server with ``broadcast()``, which writes one frame to many
connections without awaiting any of them (on uvloop, as uvicorn would run).

Mini-protocol of the "room" peers: ``/ws?room=R`` joins R and gets ``{"type":"joined"}``;
``/ws?room=R&pub=1`` publishes every text it sends to R.

    python -m benchmarks.peers.websockets_broadcast PORT
"""

from __future__ import annotations

import collections
import sys
from urllib.parse import parse_qs, urlsplit

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve

rooms: dict[str, set[ServerConnection]] = collections.defaultdict(set)


async def handler(ws: ServerConnection) -> None:
    assert ws.request is not None
    query = parse_qs(urlsplit(ws.request.path).query)
    members = rooms[query.get("room", ["bench"])[0]]
    if "pub" not in query:
        members.add(ws)
        await ws.send('{"type":"joined"}')
    try:
        async for message in ws:
            broadcast(members, message)
    finally:
        members.discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=None) as server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
