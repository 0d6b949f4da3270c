"""Soak test: churn against two wshub nodes on one Redis, watching for leaks and losses.

    make soak                      # 10 minutes, 2,000 clients
    .venv/bin/python scripts/soak.py --minutes 1 --clients 300    # a quick check

2,000 simulated clients connect to either node, join 1 to 3 of 50 channels (resuming with
``since`` where they were before), publish now and then, read, leave, disconnect, pause and do
it again. Two auditors, one per node, stay joined to every channel for the whole run.

It reports each node's RSS, file descriptors and asyncio tasks every 30 s, and passes when:

- no growth trend after warm-up: RSS in the last third of the samples is within 5 % of the
  first third (samples taken after the warm-up);
- no acknowledged message is lost: both auditors received every channel's offsets 1..N exactly
  once, in order, and every acknowledged publication among them with its data; churning
  clients saw no gap or reordering within a session, resumes included;
- no leak: with the churn paused and only the auditors connected, the tasks and file
  descriptors of each node are back to what they were at the same point after warm-up
  (connections to Redis are counted apart: a pool that may grow up to its bound).

Not part of ``make test``: it takes ``--minutes`` and two cores' worth of load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import RedisProcess, ServerProcess  # noqa: E402
from wshub.brokers.redis import POOL_SIZE  # noqa: E402

API_KEY = "soak"
MIB = 1024 * 1024


@dataclass
class Tally:
    acked: dict[tuple[str, int], Any] = field(default_factory=dict)
    sessions: int = 0
    publishes: int = 0
    resumes: int = 0
    resumes_refused: int = 0
    order_errors: list[str] = field(default_factory=list)
    client_errors: int = 0
    unavailable: int = 0


def redis_sockets(pid: int, redis_port: int) -> int:
    """The node's TCP connections to Redis: a bounded pool, counted apart from the other fds."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", "dport", "=", f":{redis_port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(f"pid={pid}," in line for line in out.splitlines())


def node_figures(node: ServerProcess, redis_port: int) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{node.http}/admin/stats", headers={"Authorization": f"apikey {API_KEY}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        stats: dict[str, Any] = json.loads(resp.read())["nodes"][0]
    assert node.proc is not None
    pid = node.proc.pid
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    to_redis = redis_sockets(pid, redis_port)
    return {
        "rss": rss,
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())) - to_redis,
        "redis": to_redis,
        "tasks": stats["tasks"],
        "connections": stats["connections"],
    }


class Session:
    """One WebSocket session with replies matched by id and messages checked for order."""

    def __init__(self, ws: Any, tally: Tally, positions: dict[str, tuple[int, str]]) -> None:
        self.ws = ws
        self.tally = tally
        self.positions = positions  # channel -> (last offset seen, epoch), kept across sessions
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.next_id = 0
        self.expect: dict[str, int] = {}  # channel -> next offset this session must see
        self.since: dict[str, tuple[int, str] | None] = {}  # joins awaiting their reply
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                frame = json.loads(raw)
                fid = frame.get("id")
                if frame["type"] == "joined":
                    self._joined(frame)
                if fid is not None and fid in self.replies:
                    self.replies.pop(fid).set_result(frame)
                elif frame["type"] == "message":
                    self._message(frame)

    def _joined(self, reply: dict[str, Any]) -> None:
        # Here, not after the reply's future: the messages that follow the reply in the same
        # read must already be checked against the right start.
        channel = reply["channel"]
        known = self.since.pop(channel, None)
        if known is not None:
            self.tally.resumes += 1
            if not reply["recovered"]:
                self.tally.resumes_refused += 1
        start = known[0] if known is not None and reply["recovered"] else reply["offset"]
        self.expect[channel] = start + 1
        self.positions[channel] = (start, reply["epoch"])

    def _message(self, frame: dict[str, Any]) -> None:
        channel, offset = frame["channel"], frame["offset"]
        want = self.expect.get(channel)
        if want is None:
            return  # joined meanwhile: the joined reply sets the start
        if offset != want:
            self.tally.order_errors.append(f"{channel}: expected {want}, got {offset}")
        self.expect[channel] = offset + 1
        self.positions[channel] = (offset, frame["epoch"])

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        fid = self.next_id
        future = self.replies[fid] = asyncio.get_running_loop().create_future()
        await self.ws.send(json.dumps({**frame, "id": fid}))
        return await asyncio.wait_for(future, 30)

    async def join(self, channel: str) -> None:
        frame: dict[str, Any] = {"type": "join", "channel": channel}
        known = self.positions.get(channel)
        if known is not None:
            frame["since"] = {"offset": known[0], "epoch": known[1]}
        self.since[channel] = known
        await self.request(frame)


async def churner(
    i: int,
    nodes: list[ServerProcess],
    channels: list[str],
    tally: Tally,
    running: asyncio.Event,
    stop_at: float,
) -> None:
    positions: dict[str, tuple[int, str]] = {}
    rnd = random.Random(i)
    await asyncio.sleep(rnd.uniform(0, 5))
    while time.monotonic() < stop_at:
        await running.wait()
        node = rnd.choice(nodes)
        try:
            async with websockets.connect(
                f"{node.url}/ws?user=c{i}", ping_interval=None, close_timeout=2
            ) as ws:
                session = Session(ws, tally, positions)
                tally.sessions += 1
                joined = rnd.sample(channels, rnd.randint(1, 3))
                for channel in joined:
                    await session.join(channel)
                stay_until = time.monotonic() + rnd.uniform(2, 10)
                while time.monotonic() < stay_until and running.is_set():
                    if rnd.random() < 0.25:
                        channel = rnd.choice(channels)
                        data = {"c": i, "n": tally.publishes}
                        reply = await session.request(
                            {"type": "publish", "channel": channel, "data": data}
                        )
                        if reply["type"] == "ack":
                            tally.publishes += 1
                            tally.acked[(channel, reply["offset"])] = data
                        else:  # "unavailable": not acknowledged, so not expected anywhere
                            tally.unavailable += 1
                    await asyncio.sleep(rnd.uniform(0.5, 2))
                if rnd.random() < 0.5:
                    await session.request({"type": "leave", "channel": joined[0]})
                session.reader.cancel()
        except (OSError, websockets.WebSocketException, TimeoutError) as exc:
            tally.client_errors += 1
            if tally.client_errors <= 5:
                print(f"client {i}: {exc!r}", flush=True)
        await asyncio.sleep(rnd.uniform(0.5, 3))


async def auditor(node: ServerProcess, channels: list[str], seen: dict[str, list[Any]]) -> Any:
    ws = await websockets.connect(f"{node.url}/ws?user=auditor", ping_interval=None)
    await ws.recv()  # welcome
    for n, channel in enumerate(channels):
        await ws.send(json.dumps({"type": "join", "channel": channel, "id": n}))

    async def read() -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                frame = json.loads(raw)
                if frame["type"] == "message":
                    seen.setdefault(frame["channel"], []).append((frame["offset"], frame["data"]))

    return ws, asyncio.create_task(read())


def trend(samples: list[int]) -> float:
    """Growth of the last third over the first third, as a fraction of the first."""
    third = max(1, len(samples) // 3)
    first = sum(samples[:third]) / third
    last = sum(samples[-third:]) / third
    return (last - first) / first


async def quiesce(
    nodes: list[ServerProcess], redis: RedisProcess, expected: int
) -> list[dict[str, Any]]:
    """Figures once only the auditors are connected and the nodes have settled."""
    for _ in range(300):
        figures = [node_figures(n, redis.port) for n in nodes]
        if all(f["connections"] == expected for f in figures):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)
    return [node_figures(n, redis.port) for n in nodes]


async def soak(args: argparse.Namespace) -> bool:
    duration = args.minutes * 60
    every = min(30.0, duration / 8)
    warmup = duration * 0.2
    channels = [f"soak:c{n}" for n in range(args.channels)]
    redis = RedisProcess().start()
    nodes = [
        ServerProcess(
            "--broker", redis.url, "--api-key", API_KEY, "--max-connections", "20000"
        ).start()
        for _ in range(2)
    ]
    tally = Tally()
    seen: list[dict[str, list[Any]]] = [{}, {}]
    ok = True
    try:
        auditors = [await auditor(n, channels, s) for n, s in zip(nodes, seen, strict=True)]
        await asyncio.sleep(1)
        start_figures = [node_figures(n, redis.port) for n in nodes]
        print(f"start: {fmt(start_figures)}", flush=True)
        running = asyncio.Event()
        running.set()
        started = time.monotonic()
        stop_at = started + duration
        clients = [
            asyncio.create_task(churner(i, nodes, channels, tally, running, stop_at))
            for i in range(args.clients)
        ]
        warm: list[dict[str, Any]] | None = None
        rss: list[list[int]] = [[], []]
        next_sample = started + every
        while time.monotonic() < stop_at:
            await asyncio.sleep(max(0.0, min(next_sample, stop_at) - time.monotonic()))
            elapsed = time.monotonic() - started
            if warm is None and elapsed >= warmup:
                running.clear()  # pause the churn: everyone disconnects
                warm = await quiesce(nodes, redis, 1)
                print(f"{elapsed:5.0f}s warm-up done, paused: {fmt(warm)}", flush=True)
                running.set()
                next_sample = time.monotonic() + every
                continue
            if time.monotonic() >= next_sample - 0.05:
                figures = [node_figures(n, redis.port) for n in nodes]
                if warm is not None:
                    for k in range(2):
                        rss[k].append(figures[k]["rss"])
                print(
                    f"{elapsed:5.0f}s {fmt(figures)} sessions={tally.sessions} "
                    f"published={tally.publishes}",
                    flush=True,
                )
                next_sample += every
        running.clear()
        await asyncio.gather(*clients)
        end = await quiesce(nodes, redis, 1)
        print(f"end (churn stopped): {fmt(end)}", flush=True)
        await asyncio.sleep(2)  # the last deliveries reach the auditors
        for ws, reader in auditors:
            await ws.close()
            reader.cancel()
    finally:
        for node in nodes:
            node.stop()
        redis.stop()

    print("\n== verdict ==")
    assert warm is not None
    for k in range(2):
        growth = trend(rss[k])
        good = growth < 0.05
        ok &= good
        print(
            f"node {k}: RSS {warm[k]['rss'] / MIB:.1f} MiB after warm-up, "
            f"{end[k]['rss'] / MIB:.1f} MiB at the end; trend {growth:+.1%} "
            f"({'ok' if good else 'GROWING'})"
        )
        leak = end[k]["tasks"] - warm[k]["tasks"], end[k]["fds"] - warm[k]["fds"]
        good = leak[0] <= 0 and leak[1] <= 0 and end[k]["redis"] <= POOL_SIZE + 1
        ok &= good
        print(
            f"node {k}: tasks {warm[k]['tasks']} -> {end[k]['tasks']}, fds {warm[k]['fds']} -> "
            f"{end[k]['fds']}, Redis connections {warm[k]['redis']} -> {end[k]['redis']} "
            f"(pool at most {POOL_SIZE} + pub/sub) ({'ok' if good else 'LEAK'})"
        )
    lost = 0
    for k in range(2):
        for channel in channels:
            got = seen[k].get(channel, [])
            offsets = [o for o, _ in got]
            if offsets != list(range(1, len(offsets) + 1)):
                ok = False
                print(f"auditor {k}: {channel} not 1..N exactly once in order")
        by_key = {(c, o): d for c in seen[k] for o, d in seen[k][c]}
        missing = [key for key, data in tally.acked.items() if by_key.get(key) != data]
        lost += len(missing)
    ok &= lost == 0 and not tally.order_errors
    print(
        f"acknowledged publications: {len(tally.acked)}, lost (either auditor): {lost}; "
        f"sessions: {tally.sessions}; resumes with since: {tally.resumes} "
        f"(refused: {tally.resumes_refused}); order errors: {len(tally.order_errors)} "
        f"{tally.order_errors[:3]}; client errors: {tally.client_errors}; publishes answered "
        f"'unavailable': {tally.unavailable}"
    )
    print("PASS" if ok else "FAIL")
    return ok


def fmt(figures: list[dict[str, Any]]) -> str:
    return " | ".join(
        f"node{k} rss={f['rss'] / MIB:.1f}MiB fds={f['fds']}+{f['redis']} tasks={f['tasks']} "
        f"conns={f['connections']}"
        for k, f in enumerate(figures)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=50)
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(soak(args)) else 1)


if __name__ == "__main__":
    main()
