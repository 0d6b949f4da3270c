"""A client that floods a wshub node at a fixed rate, in its own process.

Run as ``python -m tests.flood_client URL CHANNEL RATE``: it publishes RATE frames per second
to CHANNEL, reads everything the server answers, prints ``ready`` once it is flooding, and
stops when its stdin closes, printing a JSON summary of what it sent and what came back.
Its own process, so that its sending and reading cost nothing to the clients being measured.
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time

import websockets


async def flood(url: str, channel: str, rate: float) -> dict[str, object]:
    counts: collections.Counter[str] = collections.Counter()
    sent = 0
    async with websockets.connect(url, close_timeout=1) as ws:

        async def read() -> None:
            async for raw in ws:
                frame = json.loads(raw)
                counts[frame.get("code") or frame["type"]] += 1

        reader = asyncio.create_task(read())
        stop = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        tick = 0.01
        per_tick = rate * tick
        start = time.monotonic()
        announced = False
        frame = json.dumps({"type": "publish", "channel": channel, "data": "flood"})
        while not stop.done():
            due = int((time.monotonic() - start) / tick * per_tick) - sent
            for _ in range(max(0, due)):
                await ws.send(frame)
                sent += 1
            if not announced and counts["rate_limited"]:
                print("ready", flush=True)
                announced = True
            await asyncio.sleep(tick)
        elapsed = time.monotonic() - start
        reader.cancel()
    return {"sent": sent, "seconds": elapsed, "replies": dict(counts)}


def main() -> None:
    url, channel, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print(json.dumps(asyncio.run(flood(url, channel, rate))), flush=True)


if __name__ == "__main__":
    main()
