"""What a channel route's model costs: publications per second with and without one.

One hub, the in-memory broker, one subscriber on a link that writes nothing, so that only the
hub's own work is measured. The same event (an enum, a datetime, a list of nested lines) is
published to three channels: one matching no route, one matching a route without a model,
and one whose route validates it as ``OrderEvent``. Client ``publish`` frames
(``hub.handle_text``) and library calls (``hub.publish``) are measured in alternating rounds,
so that the machine's load falls on every case alike; medians are printed, and the cost of
the model per publication (the difference of the medians).

    .venv/bin/python -m benchmarks.channel_validation [--publications 5000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from wshub import Hub, Settings
from wshub.core.null_socket import NullSocket


class Status(StrEnum):
    placed = "placed"
    shipped = "shipped"


class Line(BaseModel):
    sku: str
    qty: int = Field(gt=0)


class OrderEvent(BaseModel):
    status: Status
    at: datetime
    lines: list[Line] = []


EVENT = {
    "status": "shipped",
    "at": "2026-12-01T10:00:00Z",
    "lines": [{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}],
}
CASES = {"no route": "plain:1", "route, no model": "routed:1", "route with model": "typed:1"}


async def measure(publications: int, rounds: int) -> dict[str, list[float]]:
    """Publications per second, per case and path, one figure per round."""
    hub = Hub("memory://", Settings(queue_size=10**7))
    hub.channel("routed:{n}")
    hub.channel("typed:{n}", model=OrderEvent)
    await hub.start()
    publisher = hub.connect("bench", NullSocket())
    subscriber = hub.connect("reader", NullSocket())
    loop = asyncio.get_running_loop()
    runs: dict[str, Callable[[], Awaitable[None]]] = {}
    for case, channel in CASES.items():
        await hub.handle_text(subscriber, json.dumps({"type": "join", "channel": channel}))
        text = json.dumps({"type": "publish", "channel": channel, "data": EVENT, "id": 1})

        async def frames(text: str = text) -> None:
            for _ in range(publications):
                await hub.handle_text(publisher, text, loop.time() + 5)

        async def calls(channel: str = channel) -> None:
            for _ in range(publications):
                await hub.publish(channel, EVENT)

        runs[f"publish frame, {case}"] = frames
        runs[f"hub.publish, {case}"] = calls
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            await run()
            rates[name].append(publications / (time.perf_counter() - started))
            await asyncio.sleep(0)  # let the writers drain their queues
    await hub.stop()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publications", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    rates = asyncio.run(measure(args.publications, args.rounds))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    for name, rate in medians.items():
        print(f"{name:36} {rate:>9,.0f} publications/s  ({1e6 / rate:.1f} us each)")
    for path in ("publish frame", "hub.publish"):
        plain = medians[f"{path}, no route"]
        typed = medians[f"{path}, route with model"]
        print(f"{path}: the model costs {1e6 / typed - 1e6 / plain:.1f} us per publication")
    print(f"({args.rounds} rounds of {args.publications} publications each, medians)")


if __name__ == "__main__":
    main()
