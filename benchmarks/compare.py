"""wshub side by side with its peers: fan-out efficiency, latency, idle memory.

Contenders (``benchmarks/contenders.py``): wshub, the FastAPI tutorial's sequential loop,
python-socketio, FastAPI + broadcaster, ``websockets.broadcast()`` and Node ``ws``. In each
round every contender is measured once, in a rotated order, so that slow drifts of the machine
hit all of them alike; the report gives the median over rounds. Per contender and round:

- **fan-out efficiency**: ``--receivers`` receivers in one room, one publisher at saturation
  for ``--duration`` s with each of ``--windows`` publications in flight (4, 16, 64);
  deliveries per second of server CPU (utime + stime from /proc), with p50/p99 latency;
- **equal offered load**: the same receivers, each of ``--offered`` deliveries/s (5,000 and
  100,000); server CPU, the share delivered, publish-to-deliver p50 and p99;
- **idle memory**: a fresh server, then ``--idle`` connections (each joined to a room) and the
  growth of the server's RSS divided by the number of connections.

The server runs on core 0 and the load generator (``wshub bench``'s engine) on the other
core(s), when the machine has two or more. Writes ``docs/performance.md`` and
``docs/performance.png``.

    python -m benchmarks.compare --rounds 3          # what `make bench` runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.compare_tables import detail_tables, ints
from benchmarks.contenders import CONTENDERS, NODE_DIR, ROOT, Contender
from wshub.bench import BenchConfig, LoadGenerator
from wshub.bench.procstat import rss_bytes

Row = dict[str, Any]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _layout() -> tuple[set[int], set[int]]:
    """(server cores, generator cores): one core for the server, the rest for the generator."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return set(cores), set(cores)
    return {cores[0]}, set(cores[1:])


@contextlib.contextmanager
def running(contender: Contender, cores: set[int]) -> Iterator[tuple[str, int]]:
    """Start ``contender`` pinned to ``cores``; yield its base URL and pid."""
    port = _free_port()
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{contender.name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        contender.argv(port),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),  # threads inherit it
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{contender.name} exited; see {log.name}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{contender.name} did not start; see {log.name}")
            time.sleep(0.1)
        time.sleep(0.3)  # let it settle before its RSS is read
        yield f"ws://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def measure_load(contender: Contender, args: argparse.Namespace, cores: set[int]) -> Row:
    with running(contender, cores) as (url, pid):
        config = BenchConfig(
            url=url,
            receivers=args.receivers,
            dialect=contender.dialect,
            server_pid=pid,
            processes=1,
            duration=args.duration,
        )
        row: Row = {}
        with LoadGenerator(config) as generator:
            generator.connect()
            # Saturation with 4, 16, 64 publications in flight: at 4 neither side can
            # coalesce much; at 64 wshub writes a burst per tick and Node ws does not.
            for window in ints(args.windows):
                generator.config.window = window
                sat = generator.measure(rate=0)
                row.update(_figures(f"w{window}", sat))
            generator.config.window = 64
            # The same offered load for both: server CPU, latency, and whether it kept up.
            for offered in ints(args.offered):
                row.update(
                    _figures(f"at{offered}", generator.measure(rate=offered / args.receivers))
                )
            saturation = generator.measure(rate=0) if not args.windows else None
            fixed = generator.measure(rate=args.rate) if not args.offered else None
    first_w = f"w{ints(args.windows)[0]}" if args.windows else ""
    first_at = f"at{ints(args.offered)[0]}" if args.offered else ""
    if saturation is not None:
        row.update(_figures("legacy", saturation))
        first_w = "legacy"
    if fixed is not None:
        row.update(_figures("legacy_fixed", fixed))
        first_at = "legacy_fixed"
    return {
        **row,
        # The one-line summary: the first window's saturation, the first offered load.
        "deliveries_per_cpu_s": row[f"{first_w}_dps"],
        "delivered_per_s": row[f"{first_w}_delivered"],
        "server_cpu_share": row[f"{first_w}_cpu"],
        "saturation_delivery_ratio": row[f"{first_w}_ratio"],
        "generator_saturated": row[f"{first_w}_generator_limit"],
        "generator_reasons": row[f"{first_w}_reasons"],
        "p50_ms": row[f"{first_at}_p50"],
        "p99_ms": row[f"{first_at}_p99"],
        "fixed_delivery_ratio": row[f"{first_at}_ratio"],
        "fixed_generator_saturated": row[f"{first_at}_generator_limit"],
        "errors": sum(v for k, v in row.items() if k.endswith("_errors")),
    }


def _figures(prefix: str, result: Any) -> Row:
    """One measurement's figures under ``prefix``: throughput, CPU, latency, limits."""
    return {
        f"{prefix}_dps": result.deliveries_per_cpu_s or 0.0,
        f"{prefix}_delivered": result.delivered_per_s,
        f"{prefix}_cpu": result.server.cpu_share if result.server else 0.0,
        f"{prefix}_p50": result.latency_ms["p50"],
        f"{prefix}_p99": result.latency_ms["p99"],
        f"{prefix}_ratio": result.delivery_ratio,
        f"{prefix}_generator_limit": result.generator.saturated,
        f"{prefix}_reasons": result.generator.reasons,
        f"{prefix}_errors": result.errors,
    }


def measure_idle(contender: Contender, steps: list[int], cores: set[int], settle: float) -> Row:
    """Server RSS growth per connection at each of ``steps`` open, joined connections."""
    row: Row = {}
    with running(contender, cores) as (url, pid), contextlib.ExitStack() as stack:
        before = rss_bytes(pid)
        connected = 0
        for n in steps:
            config = BenchConfig(
                url=url, receivers=n - connected, dialect=contender.dialect, processes=1
            )
            generator = stack.enter_context(LoadGenerator(config))
            connected += generator.connect()
            time.sleep(settle)  # handshakes done, buffers settled
            row[f"idle_kb_{n}"] = (rss_bytes(pid) - before) / max(1, connected) / 1024
            row[f"idle_connected_{n}"] = connected
    return row


def _machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:  # a peer left out of a narrowed run
            return "not installed"

    pkgs = ", ".join(
        f"{p} {installed(p)}"
        for p in ("uvicorn", "websockets", "python-socketio", "broadcaster", "fastapi", "picows")
    )
    ws_package = NODE_DIR / "node_modules" / "ws" / "package.json"
    ws = json.loads(ws_package.read_text())["version"] if ws_package.exists() else "not installed"
    return (
        f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; Linux {platform.release()}; "
        f"Python {platform.python_version()}, Node {node}; {pkgs}, ws {ws}"
    )


def _median(rows: list[Row], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return statistics.median(values) if values else float("nan")


def medians(rows: list[Row]) -> dict[str, float]:
    """The median over rounds of every measured number in ``rows``.

    A row also carries what is not a measurement: flags (``generator_saturated``, counted
    separately) and lists (``generator_reasons``), which have no median, and with an even
    number of rounds would make ``statistics.median`` add two lists and divide by 2.
    """
    keys = dict.fromkeys(k for r in rows for k in r)
    numeric = [
        k
        for k in keys
        if all(isinstance(r[k], int | float) and not isinstance(r[k], bool) for r in rows if k in r)
    ]
    return {k: _median(rows, k) for k in numeric}


def report_table(results: dict[str, list[Row]], args: argparse.Namespace) -> str:
    """The Markdown table of medians, one line per contender, in the contenders' order."""
    names = [c.name for c in CONTENDERS if results.get(c.name)]
    labels = {c.name: c.label for c in CONTENDERS}
    nan = float("nan")
    med = {n: medians(results[n]) for n in names}
    node = med.get("node-ws", {}).get("deliveries_per_cpu_s", nan)
    idle = [int(x) for x in args.idle.split(",")] if args.idle else []
    head = [
        "server",
        f"deliveries per server CPU-second (N={args.receivers}, saturation)",
        "vs Node `ws`",
        "delivered msgs/s",
        f"p50 ms ({args.rate:g} pub/s)",
        f"p99 ms ({args.rate:g} pub/s)",
        *[f"idle KB/conn at {n:,}" for n in idle],
        "generator saturated (rounds)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for n in names:
        m = med[n]
        sat = sum(bool(r.get("generator_saturated")) for r in results[n])
        cells = [
            labels[n],
            f"{m.get('deliveries_per_cpu_s', nan):,.0f}",
            f"{m.get('deliveries_per_cpu_s', nan) / node:.2f}x",
            f"{m.get('delivered_per_s', nan):,.0f}",
            f"{m.get('p50_ms', nan):.2f}",
            f"{m.get('p99_ms', nan):.2f}",
            *[f"{m.get(f'idle_kb_{k}', nan):.1f}" for k in idle],
            f"{sat}/{len(results[n])}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    results: dict[str, list[Row]], args: argparse.Namespace, md: Path, machine: str = ""
) -> None:
    """Replace the results block of ``md`` (or append one); ``machine`` defaults to this one."""
    table = report_table(results, args)
    command = (
        "make bench" if args.make else " ".join(["python -m benchmarks.compare", *sys.argv[1:]])
    )
    text = md.read_text() if md.exists() else ""
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    block = (
        f"{start}\n"
        f"Measured {time.strftime('%Y-%m-%d')} on {machine or _machine()}. "
        f"Medians of {args.rounds} rounds; {args.duration:g} s per measurement; "
        f"{args.rate:g} publications/s x {args.receivers} receivers = "
        f"{args.rate * args.receivers:,.0f} deliveries/s for latency.\n\n"
        f"{table}\n\n"
        f"{detail_tables(results, args, {n: medians(rows) for n, rows in results.items()})}\n"
        f"Reproduce: `{command}`\n"
        f"{end}"
    )
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text + "\n" + block + "\n"
    md.write_text(text)
    print(table)


def write_chart(results: dict[str, list[Row]], args: argparse.Namespace, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c.name for c in CONTENDERS if c.name in results]
    idle = [int(x) for x in args.idle.split(",")] if args.idle else []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ys = range(len(names))

    def bars(ax: Any, key: str, title: str, offset: float = 0.0, label: str = "") -> None:
        values = [_median(results[n], key) for n in names]
        ax.barh([y + offset for y in ys], values, height=0.4 if label else 0.7, label=label or None)
        ax.set_yticks(list(ys), names)
        ax.invert_yaxis()
        ax.set_title(title)

    bars(axes[0], "deliveries_per_cpu_s", f"deliveries per server CPU-second\n(N={args.receivers})")
    bars(axes[1], "p50_ms", f"latency ms at {args.rate:g} pub/s x {args.receivers}", -0.2, "p50")
    bars(axes[1], "p99_ms", f"latency ms at {args.rate:g} pub/s x {args.receivers}", 0.2, "p99")
    axes[1].legend()
    for i, n in enumerate(idle):
        bars(axes[2], f"idle_kb_{n}", "idle KB per connection", -0.2 + 0.4 * i, f"{n:,} conns")
    if idle:
        axes[2].legend()
    fig.suptitle(f"wshub and peers, medians of {args.rounds} rounds (higher is better on the left)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--receivers", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=5.0, help="publications/s for latency")
    parser.add_argument("--windows", default="4,16,64", help="publications in flight, saturated")
    parser.add_argument(
        "--offered", default="5000,100000", help="deliveries/s offered to both, for CPU and latency"
    )
    parser.add_argument("--idle", default="1000,10000", help="connection counts for memory")
    parser.add_argument("--settle", type=float, default=2.0, help="s before reading idle RSS")
    parser.add_argument("--only", default="", help="comma-separated contender names")
    parser.add_argument("--md", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "performance.png")
    parser.add_argument("--json", type=Path, help="also write every round's numbers here")
    parser.add_argument("--make", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    # 10,000 connections need 10,000 descriptors on each side; children inherit the limit.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 200_000 if hard == resource.RLIM_INFINITY else max(hard, 200_000)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server_cores, generator_cores = _layout()
    os.sched_setaffinity(0, generator_cores)  # the generator's processes inherit it
    chosen = [c for c in CONTENDERS if not args.only or c.name in args.only.split(",")]
    steps = [int(x) for x in args.idle.split(",")] if args.idle else []
    results: dict[str, list[Row]] = {c.name: [] for c in chosen}
    for round_ in range(args.rounds):
        shift = round_ % len(chosen)
        for contender in chosen[shift:] + chosen[:shift]:
            row = measure_load(contender, args, server_cores)
            if steps:
                row.update(measure_idle(contender, steps, server_cores, args.settle))
            results[contender.name].append(row)
            shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
            print(f"round {round_ + 1} {contender.name}: {shown}", file=sys.stderr, flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
    write_report(results, args, args.md)
    write_chart(results, args, args.png)


if __name__ == "__main__":
    main()
