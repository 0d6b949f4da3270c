"""What a node counts: Prometheus metrics, and the same figures as plain numbers for /admin.

The hub calls :class:`HubMetrics`; it never formats, serves or writes anything itself. Costs
are per event, never per subscriber: a publication fanned out to 10 000 connections is one
``inc(10000)`` and one latency observation, and no metric carries a per-connection or
per-channel label, so the number of time series does not grow with traffic.

Prometheus objects are process-wide (that is how prometheus-client registers them). When
``PROMETHEUS_MULTIPROC_DIR`` is set before wshub is imported, prometheus-client keeps every
value in a memory-mapped file in that folder and :func:`exposition` merges the files of all
worker processes, so one scrape of any worker sees the whole server.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

from wshub.protocol import ErrorCode

__all__ = ["CONTENT_TYPE_LATEST", "HubMetrics", "exposition", "multiprocess_dir"]

# Latencies on one machine are sub-millisecond; across nodes through Redis, milliseconds.
_LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)  # fmt: skip

CONNECTIONS: Final = Gauge(
    "wshub_connections",
    "Open connections (WebSocket protocol, plain-text chat and SSE streams).",
    multiprocess_mode="livesum",
)
CONNECTIONS_OPENED: Final = Counter(
    "wshub_connections_opened", "WebSocket connections accepted since start."
)
SSE_STREAMS: Final = Gauge(
    "wshub_sse_streams",
    "Open Server-Sent Events streams (counted in wshub_connections too).",
    multiprocess_mode="livesum",
)
JOINS: Final = Counter("wshub_joins", "Successful channel joins.")
PUBLISHED: Final = Counter(
    "wshub_messages_published", "Channel messages published (by clients or the library API)."
)
# "Fanned out", not "delivered": these count frames handed to connections' queues, which a
# connection that closes before its writer runs never writes.
FANNED_OUT: Final = Counter(
    "wshub_messages_fanned_out",
    "Channel message frames queued for subscribers, live and replayed on recovery.",
)
DIRECT_SENT: Final = Counter("wshub_direct_sent", "Direct messages sent (send frames).")
DIRECT_FANNED_OUT: Final = Counter(
    "wshub_direct_fanned_out", "Direct message frames queued for the recipients' connections."
)
ERRORS: Final = Counter("wshub_errors", "Error frames sent to clients, by code.", ["code"])
REFUSED: Final = Counter(
    "wshub_handshakes_refused", "WebSocket handshakes refused before the upgrade.", ["status"]
)
SLOW_CONSUMERS: Final = Counter(
    "wshub_slow_consumer_closes", "Connections closed with 4008 because their queue overflowed."
)
QUEUED: Final = Gauge(
    "wshub_queued_frames",
    "Frames waiting in connection queues, summed over connections (sampled each second).",
    multiprocess_mode="livesum",
)
QUEUE_MAX: Final = Gauge(
    "wshub_queue_depth_max",
    "The longest connection queue, in frames (sampled each second).",
    multiprocess_mode="livemax",
)
DELIVERY_LATENCY: Final = Histogram(
    "wshub_delivery_latency_seconds",
    "From a message's publication (its ts) to its fan-out on this node, once per publication.",
    buckets=_LATENCY_BUCKETS,
)
BROKER_ROUND_TRIP: Final = Histogram(
    "wshub_broker_round_trip_seconds",
    "Time the broker takes to answer, by operation.",
    ["operation"],
    buckets=_LATENCY_BUCKETS,
)

# Children bound once: ``labels()`` is a dict lookup under a lock, not for every event.
_ERRORS: Final = {code.value: ERRORS.labels(code.value) for code in ErrorCode}
_ROUND_TRIP: Final = {op: BROKER_ROUND_TRIP.labels(op) for op in ("publish", "recover", "send")}


class HubMetrics:
    """One hub's counters. Each method updates Prometheus and the hub's own totals.

    The plain totals are what ``/admin/stats`` reports for this node: they belong to one hub,
    while the Prometheus objects are shared by every hub in the process.
    """

    __slots__ = (
        "connections_opened",
        "direct_fanned_out_total",
        "direct_sent",
        "errors",
        "fanned_out_total",
        "joins",
        "published",
        "refused",
        "slow_consumers",
        "sse_streams",
    )

    def __init__(self) -> None:
        self.connections_opened = 0
        self.sse_streams = 0
        """Open Server-Sent Events streams, also counted as connections."""
        self.joins = 0
        self.published = 0
        self.fanned_out_total = 0
        """Channel message frames queued for subscribers (not necessarily written yet)."""
        self.direct_sent = 0
        self.direct_fanned_out_total = 0
        self.slow_consumers = 0
        self.errors: dict[str, int] = {}
        self.refused: dict[str, int] = {}

    def connection_opened(self) -> None:
        self.connections_opened += 1
        CONNECTIONS_OPENED.inc()
        CONNECTIONS.inc()

    def connection_closed(self) -> None:
        CONNECTIONS.dec()

    def sse_opened(self) -> None:
        self.sse_streams += 1
        SSE_STREAMS.inc()

    def sse_closed(self) -> None:
        self.sse_streams -= 1
        SSE_STREAMS.dec()

    def joined(self) -> None:
        self.joins += 1
        JOINS.inc()

    def message_published(self, broker_seconds: float) -> None:
        self.published += 1
        PUBLISHED.inc()
        _ROUND_TRIP["publish"].observe(broker_seconds)

    def recovered(self, broker_seconds: float, replayed: int) -> None:
        _ROUND_TRIP["recover"].observe(broker_seconds)
        if replayed:
            self.fanned_out_total += replayed
            FANNED_OUT.inc(replayed)

    def fanned_out(self, subscribers: int, latency: float) -> None:
        """One publication handed to ``subscribers`` local queues."""
        if subscribers:
            self.fanned_out_total += subscribers
            FANNED_OUT.inc(subscribers)
        DELIVERY_LATENCY.observe(max(latency, 0.0))

    def direct_sent_once(self, broker_seconds: float) -> None:
        self.direct_sent += 1
        DIRECT_SENT.inc()
        _ROUND_TRIP["send"].observe(broker_seconds)

    def direct_fanned_out(self, connections: int) -> None:
        if connections:
            self.direct_fanned_out_total += connections
            DIRECT_FANNED_OUT.inc(connections)

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        child = _ERRORS.get(code)
        (child or ERRORS.labels(code)).inc()

    def handshake_refused(self, status: int) -> None:
        key = str(status)
        self.refused[key] = self.refused.get(key, 0) + 1
        REFUSED.labels(key).inc()

    def slow_consumer(self) -> None:
        self.slow_consumers += 1
        SLOW_CONSUMERS.inc()

    @staticmethod
    def sample_queues(depths: Iterable[int]) -> tuple[int, int]:
        """Record the queue gauges from every connection's depth; returns (total, max)."""
        total = longest = 0
        for depth in depths:
            total += depth
            if depth > longest:
                longest = depth
        QUEUED.set(total)
        QUEUE_MAX.set(longest)
        return total, longest


def multiprocess_dir() -> str | None:
    """The folder prometheus-client shares between worker processes, when one is set."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> bytes:
    """The text a Prometheus scrape gets: this process, or every worker in multiprocess mode."""
    if multiprocess_dir() is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
