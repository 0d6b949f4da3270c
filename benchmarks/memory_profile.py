"""What an idle connection costs the server, by source file (tracemalloc).

A wshub node runs in this process under uvicorn with wshub's own WebSocket transport; ``--clients``
connections are opened from another process, each joined to one channel, and the Python
allocations they added on the server are grouped by the file that made them.

    python -m benchmarks.memory_profile --clients 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tracemalloc

import uvicorn

from tests.support import free_port
from wshub import Hub
from wshub.app.server import create_app
from wshub.transport.owned import WshubTransport

CLIENTS = r"""
import asyncio, sys, websockets
async def main(url, n):
    held = []
    for _ in range(n):
        ws = await websockets.connect(url, ping_interval=None)
        await ws.recv()
        await ws.send('{"type":"join","channel":"room","id":1}')
        await ws.recv()
        held.append(ws)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def _clients(url: str, count: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CLIENTS, url, str(count),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    await proc.stdout.readline()
    return proc


async def profile(count: int, top: int) -> None:
    hub = Hub()
    config = uvicorn.Config(
        create_app(hub),
        port=free_port(),
        ws=WshubTransport,  # as `wshub serve` runs
        ws_per_message_deflate=False,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    url = f"ws://127.0.0.1:{config.port}/ws?user=idle"
    warm = await _clients(url, 1)  # one-time allocations (the channel, caches) not counted
    gc.collect()
    tracemalloc.start(10)
    before = tracemalloc.take_snapshot()
    held = await _clients(url, count)
    await asyncio.sleep(0.5)
    gc.collect()
    stats = tracemalloc.take_snapshot().compare_to(before, "filename")
    total = sum(s.size_diff for s in stats)
    print(f"{total / count / 1024:.1f} KiB of Python objects per idle connection ({count})")
    for s in stats[:top]:
        name = s.traceback[0].filename.split("site-packages/")[-1]
        print(f"{s.size_diff / count:8.0f} B  {name}")
    for proc in (held, warm):
        assert proc.stdin is not None
        proc.stdin.write(b"\n")
        await proc.wait()
    server.should_exit = True
    await serving


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args(argv)
    asyncio.run(profile(args.clients, args.top))


if __name__ == "__main__":
    main()
