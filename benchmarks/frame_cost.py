"""What serving one client frame costs the hub: microseconds per ``publish`` frame.

The in-memory broker and a link that writes nothing, so that only the hub's own work is
measured (decode, checks, the frame's budget and bounded broker calls, the ack). Rounds of
N frames; the median and the fastest round are printed (the fastest is the least disturbed
on a shared machine).

    .venv/bin/python -m benchmarks.frame_cost [--frames 20000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import time

from wshub import Hub, Settings
from wshub.core.null_socket import NullSocket


async def measure(frames: int, rounds: int) -> list[float]:
    hub = Hub("memory://", Settings(queue_size=10**7))
    await hub.start()
    conn = hub.connect("bench", NullSocket())
    text = json.dumps({"type": "publish", "channel": "c", "data": {"x": 1}, "id": 1})
    # Older hubs take no deadline: the same script measures both, side by side.
    bounded = "deadline" in inspect.signature(hub.handle_text).parameters
    loop = asyncio.get_running_loop()
    per_frame = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(frames):
            if bounded:
                await hub.handle_text(conn, text, loop.time() + 5)
            else:
                await hub.handle_text(conn, text)
        per_frame.append((time.perf_counter() - started) / frames * 1e6)
        await asyncio.sleep(0)  # let the writer drain the queue
    await hub.stop()
    return per_frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    per_frame = asyncio.run(measure(args.frames, args.rounds))
    print(
        f"publish frame: median {statistics.median(per_frame):.2f} us, "
        f"fastest round {min(per_frame):.2f} us ({args.rounds} rounds of {args.frames})"
    )


if __name__ == "__main__":
    main()
