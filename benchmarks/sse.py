"""Server-Sent Events: the delay of one event through nginx against direct, and what a stream
costs a node in memory.

``delay``: one `wshub serve` node behind Debian's nginx with the configuration of
docs/deploy.md; one SSE stream direct and one through nginx, on the same channel; each round
publishes one small message and times its arrival on both streams (from the publish's send).

``streams``: ``--streams`` concurrent SSE streams on one node (each joined to one channel),
opened from another process; the node's RSS before and after, per stream.

    python -m benchmarks.sse delay --rounds 200
    python -m benchmarks.sse streams --streams 1000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.sse_support import Stream, sse
from tests.support import ServerProcess, connect, free_port
from tests.test_deploy import documented_config, nginx, render


async def _arrival(stream: Stream) -> float:
    await stream.until("message", timeout=10)
    return time.perf_counter()


async def delay(rounds: int) -> None:
    node = ServerProcess().start()
    try:
        site = render(documented_config(), node.port, node.port, free_port())
        with tempfile.TemporaryDirectory() as prefix, nginx(site, Path(prefix)) as port:
            proxy = f"http://127.0.0.1:{port}"
            async with (
                connect(node.url, "writer") as writer,
                sse(node.http, "bench") as direct,
                sse(proxy, "bench") as proxied,
            ):
                await direct.until("joined")
                await proxied.until("joined")
                times: dict[str, list[float]] = {"direct": [], "nginx": []}
                for n in range(rounds):
                    arrivals = asyncio.gather(_arrival(direct), _arrival(proxied))
                    sent = time.perf_counter()
                    await writer.send({"type": "publish", "channel": "bench", "data": n})
                    got_direct, got_proxied = await arrivals
                    await writer.expect("ack")
                    times["direct"].append(got_direct - sent)
                    times["nginx"].append(got_proxied - sent)
        for name, values in times.items():
            values.sort()
            median = statistics.median(values) * 1000
            p99 = values[int(len(values) * 0.99) - 1] * 1000
            print(f"{name:7} median {median:.2f} ms  p99 {p99:.2f} ms  ({rounds} events)")
        extra = statistics.median(times["nginx"]) - statistics.median(times["direct"])
        print(f"nginx adds {extra * 1000:.2f} ms (median)")
    finally:
        node.stop()


HOLDER = r"""
import asyncio, sys, httpx
async def main(base, n):
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    client = httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=limits)
    async def hold(i, ready):
        async with client.stream("GET", f"{base}/sse?channel=room&user=u{i}") as r:
            lines = r.aiter_lines()
            async for line in lines:
                if line.startswith("event: joined"):
                    break
            ready.release()
            async for _ in lines:
                pass
    ready = asyncio.Semaphore(0)
    tasks = [asyncio.create_task(hold(i, ready)) for i in range(n)]
    for _ in range(n):
        await ready.acquire()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def streams(count: int) -> None:
    node = ServerProcess("--max-connections", str(count + 10)).start()
    try:
        assert node.proc is not None
        # Warm the node (imports, first responses) so that the baseline is not its cold start.
        warm = subprocess.run(
            [sys.executable, "-c", HOLDER.replace("sys.stdin.readline", "lambda: None"),
             node.http, "5"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "ready" in warm.stdout, warm.stderr
        time.sleep(1)
        before = _rss_kib(node.proc.pid)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, node.http, str(count)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None and holder.stdin is not None
        started = time.perf_counter()
        assert holder.stdout.readline().strip() == "ready"
        opened = time.perf_counter() - started
        time.sleep(1)
        after = _rss_kib(node.proc.pid)
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(30)
        print(f"{count} SSE streams opened in {opened:.1f} s")
        print(f"node RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB")
        print(f"per stream: {(after - before) / count:.1f} KiB")
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("delay").add_argument("--rounds", type=int, default=200)
    sub.add_parser("streams").add_argument("--streams", type=int, default=1000)
    args = parser.parse_args()
    if args.what == "delay":
        asyncio.run(delay(args.rounds))
    else:
        streams(args.streams)


if __name__ == "__main__":
    main()
