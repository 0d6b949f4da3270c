"""What one delivery of a fan-out costs the hub in Python: nanoseconds per delivery.

N fast-path connections of one user (so no presence events) on one channel of the in-memory
broker, each writing to a transport that only counts bytes, so that the socket's system call
(the same for every server) is left out and only wshub's own work per delivery is measured:
the fan-out, the queue, the flush at the end of the tick and the write call. One publication
per event-loop tick, as at an offered load well below saturation, where nothing can be
coalesced. In a real server each delivery costs about three times this, as every system call
evicts the caches the next delivery needs. The median and the fastest of the
rounds are printed (the fastest is the least disturbed on a shared machine).

    .venv/bin/python -m benchmarks.fanout_cost [--receivers 1000] [--publications 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from wshub import Hub, Settings
from wshub.core.null_socket import CountingPath, NullSocket


async def measure(receivers: int, publications: int, rounds: int) -> list[float]:
    hub = Hub("memory://", Settings(queue_size=10_000))
    await hub.start()
    paths = [CountingPath() for _ in range(receivers)]
    sockets = [NullSocket(path) for path in paths]
    for socket in sockets:
        conn = hub.connect("bench", socket)
        join = json.dumps({"type": "join", "channel": "c", "id": 1})
        await hub.handle_text(conn, join, asyncio.get_running_loop().time() + 5)
    await asyncio.sleep(0.05)
    per_delivery = []
    for _ in range(rounds):
        before = sum(p.bytes for p in paths)
        started = time.process_time()
        for n in range(publications):
            await hub.publish("c", {"n": n})
            await asyncio.sleep(0)  # the end of the tick: the flush
        await asyncio.sleep(0)
        spent = time.process_time() - started
        assert sum(p.bytes for p in paths) > before, "nothing was delivered"
        per_delivery.append(spent / (publications * receivers) * 1e9)
    await hub.stop()
    return per_delivery


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--receivers", type=int, default=1000)
    parser.add_argument("--publications", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    result = asyncio.run(measure(args.receivers, args.publications, args.rounds))
    print(
        f"one delivery: median {statistics.median(result):.0f} ns, "
        f"fastest round {min(result):.0f} ns ({args.rounds} rounds of "
        f"{args.publications} publications to {args.receivers})"
    )


if __name__ == "__main__":
    main()
