"""The Redis broker's connections: bounded waits, and a true account of what a failure means.

Redis can fail in two ways that a client must tell apart:

- the command surely never reached Redis (connection refused, no connection free, a write
  that failed): nothing happened, and saying ``unavailable`` is true;
- the command was written and no reply came (Redis stalled, the link died, the reply was
  lost): it may have run. Saying ``unavailable`` here would be a lie that makes a retrying
  publisher duplicate its message; :class:`ReplyLost` marks it.

redis-py's own ``Retry`` (with jittered backoff) retries only the first kind, once: a sent,
non-idempotent command is never retried blindly.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError, RedisError
from redis.exceptions import TimeoutError as RedisTimeout

try:
    from redis.maint_notifications import MaintNotificationsConfig
except (
    ImportError
):  # pragma: no cover - redis-py before 7 (`make test-lowest`): nothing to turn off
    MAINTENANCE_OFF: dict[str, Any] = {}
else:
    # Off: with it, the pool skips its check that a pooled connection is still open before
    # use (redis-py 8), and a command goes out on a connection Redis closed.
    MAINTENANCE_OFF = {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}

__all__ = [
    "POOL_SIZE",
    "Client",
    "ReplyLost",
    "cluster_client",
    "command_client",
    "pubsub_client",
    "shard_url",
]

Client = aioredis.Redis | RedisCluster
"""The client for commands: one Redis, or a cluster."""

POOL_SIZE = 64
"""Redis connections for commands, per node; pub/sub has one more of its own."""
IDLE_CHECK = 1.0
CONNECT_SECONDS = 2.0
"""At most this long to open a TCP connection (a black-holed address never answers)."""


class ReplyLost(RedisError):
    """A command was sent to Redis and its reply did not come: it may or may not have run.

    Not a ConnectionError nor a TimeoutError, so that no ``Retry`` sends it again.
    """


class _ReplyTracking(AbstractConnection):
    """A connection that knows whether the command being answered was written to Redis.

    Commands go out with ``check_health=True``; the connection's own handshake and health
    PINGs with ``False``, so their failures still count as "never sent".
    """

    _command_sent = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self._command_sent = False
        reader = self._reader
        # Redis closed this connection while it was idle. redis-py 5.0's pool hands it out
        # anyway (its check reads the stream's end as "nothing to read"), and a command written
        # into it would be taken for sent. It was not: it is retried on a new connection.
        if reader is not None and reader.at_eof():  # pragma: no cover - redis-py 5.0's pool
            raise ConnectionError("Redis closed the connection")
        await super().send_packed_command(command, check_health)
        self._command_sent = check_health

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except (ConnectionError, RedisTimeout, OSError) as exc:
            if self._command_sent:
                raise ReplyLost(f"no reply from Redis: {exc}") from exc
            raise


class _Tcp(_ReplyTracking, aioredis.Connection):
    pass


class _Tls(_ReplyTracking, aioredis.SSLConnection):
    pass


class _Unix(_ReplyTracking, aioredis.UnixDomainSocketConnection):
    pass


_TRACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    aioredis.Connection: _Tcp,
    aioredis.SSLConnection: _Tls,
    aioredis.UnixDomainSocketConnection: _Unix,
}


def _options(url: str, timeout: float) -> dict[str, Any]:
    """Connection settings for ``url``: every wait bounded by ``timeout``, TCP keepalive on."""
    options: dict[str, Any] = dict(parse_url(url))
    base = options.get("connection_class", aioredis.Connection)
    options["connection_class"] = _TRACKED[base]
    options.update(
        MAINTENANCE_OFF,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=min(CONNECT_SECONDS, timeout),
    )
    if base is not aioredis.UnixDomainSocketConnection:
        # The kernel's own probe, for a peer that vanished without a FIN (probes start after
        # ``timeout`` idle seconds): it also frees sockets the listener gave up on.
        keepalive = {
            getattr(socket, name): value
            for name, value in (
                ("TCP_KEEPIDLE", max(1, int(timeout))),
                ("TCP_KEEPINTVL", max(1, int(timeout / 3))),
                ("TCP_KEEPCNT", 3),
            )
            if hasattr(socket, name)
        }
        options.update(socket_keepalive=True, socket_keepalive_options=keepalive)
    return options


def command_client(url: str, timeout: float) -> aioredis.Redis:
    """The client for commands: a bounded pool, one retry of what surely was not sent.

    A bounded pool: commands wait (at most ``timeout``) for a free connection instead of
    opening one per concurrent command (10,000 clients joining at once would open 10,000
    connections, kept open for ever; the soak test found it). A connection idle for
    :data:`IDLE_CHECK` seconds is PINGed before a command goes out on it, so that one left
    stale by a Redis restart is replaced before the command is sent (the retry), not after.
    """
    retry = Retry(EqualJitterBackoff(cap=0.5, base=0.05), 1, (ConnectionError,))
    pool = aioredis.BlockingConnectionPool(
        max_connections=POOL_SIZE,
        timeout=timeout,
        retry=retry,
        health_check_interval=min(IDLE_CHECK, timeout / 3),
        **_options(url, timeout),
    )
    return aioredis.Redis.from_pool(pool)


def pubsub_client(url: str, timeout: float) -> aioredis.Redis:
    """The client of the pub/sub connection. It never retries or reconnects by itself: a
    silent reconnect would lose publications unseen, so the listener does it and then
    re-checks every channel."""
    pool = aioredis.ConnectionPool(retry=Retry(NoBackoff(), 0), **_options(url, timeout))
    return aioredis.Redis.from_pool(pool)


def _cluster_parts(url: str) -> tuple[str, str, list[tuple[str, int]]]:
    """``redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...]``: the plain scheme, the user
    part (``:PASSWORD@`` or empty) and the startup nodes."""
    parts = urlsplit(url)
    scheme = parts.scheme.removesuffix("+cluster")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        nodes.append((host, int(port)) if colon else (item, 6379))
    return scheme, userinfo + "@" if userinfo else "", nodes


def shard_url(url: str, host: str, port: int) -> str:
    """The ``redis://`` (or ``rediss://``) URL of one shard of the cluster at ``url``."""
    scheme, userinfo, _ = _cluster_parts(url)
    return f"{scheme}://{userinfo}{host}:{port}/0"


CLUSTER_REDIS_PY = (8, 1)
"""The oldest redis-py that ``redis+cluster://`` is tested with (5.0's cluster client fails)."""


def cluster_client(url: str, timeout: float) -> RedisCluster:
    """The client for commands on a Redis Cluster: redis-py follows ``MOVED`` and ``ASK`` and
    refreshes its slot map, and retries (with backoff, within about ``timeout``) only what
    surely was not sent; each shard's connections track their replies as above."""
    found = tuple(int(part) for part in redis.__version__.split(".")[:2])
    if found < CLUSTER_REDIS_PY:
        raise ValueError(
            f"redis+cluster:// needs redis-py {'.'.join(map(str, CLUSTER_REDIS_PY))} or later "
            f"(installed: {redis.__version__})"
        )
    scheme, _, nodes = _cluster_parts(url)
    options = _options(shard_url(url, *nodes[0]), timeout)
    tracked = options.pop("connection_class")
    password = options.pop("password", None)
    username = options.pop("username", None)
    for name in ("host", "port", "db", "path"):
        options.pop(name, None)
    retry = Retry(EqualJitterBackoff(cap=0.5, base=0.05), max(1, int(timeout / 0.5)))
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        password=password,
        username=username,
        ssl=scheme == "rediss",
        retry=retry,
        max_connections=POOL_SIZE,
        **options,
    )
    # RedisCluster takes no connection class; its nodes are made from these arguments, so the
    # reply-tracking class goes here (a sent command must never be retried on another node).
    client.nodes_manager.connection_kwargs["connection_class"] = tracked
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = tracked
    return client
