"""Settings: every limit with its safe default, in one place.

The CLI builds a :class:`Settings` from flags and ``WSHUB_*`` variables; library users pass one
to :class:`wshub.Hub`. The defaults are the ones PROTOCOL.md names.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["MIB", "Settings"]

MIB = 1024 * 1024

_AT_LEAST_ONE = (
    "max_frame_bytes",
    "queue_size",
    "queue_bytes",
    "max_channels",
    "history_size",
    "max_meta_bytes",
)


@dataclass(frozen=True, slots=True)
class Settings:
    """What a node allows and how it behaves. All sizes in bytes, times in seconds."""

    max_connections: int = 10_000
    """Connections per node; more are refused with 503 before the upgrade."""
    max_connections_per_user: int = 0
    """Connections per user on this node; 0 means no limit."""
    max_frame_bytes: int = 65_536
    """Frames up to this size are processed; larger ones get ``too_large``."""
    rate_limit: float = 0
    """Frames per second per connection; 0 means no limit."""
    max_channels: int = 128
    """Channels one connection may join at once."""
    unjoined_read_rate: float = 2
    """``history`` and ``presence`` requests per second, in bursts of ``max_channels``, for
    channels a connection has not joined; 0 means no limit."""
    max_meta_bytes: int = 1024
    """Bytes of presence ``meta`` in one ``join``."""
    queue_size: int = 1024
    """Frames waiting to be written to one connection; overflowing it closes with 4008."""
    queue_bytes: int = MIB
    """Bytes waiting to be written to one connection, replies included; more closes with 4008."""
    history_size: int = 100
    """Messages kept per channel."""
    history_ttl: float = 300
    """Seconds a message stays in a channel's history."""
    ping_interval: float = 20
    """Seconds between WebSocket pings from the server."""
    ping_timeout: float = 20
    """Seconds to wait for a pong before a peer is declared dead."""
    presence_ttl: float = 30
    """Seconds after which a vanished node's presence entries expire (shared brokers)."""
    reply_timeout: float = 5
    """Seconds from a client frame's arrival to its reply, even when the broker is slow or
    unreachable: its broker calls are cut off then (``timeout`` or ``unavailable``); 0: no bound."""
    idempotency_ttl: float = 300
    """Seconds a publication's ``idempotency_key`` is remembered, per channel."""
    broker_timeout: float = 10
    """Seconds a shared broker may stay silent (a command unanswered, the pub/sub link quiet)
    before it is taken for dead: the node answers ``unavailable``/``timeout`` and reconnects."""
    close_timeout: float = 5
    """Seconds a closing frame may wait to be flushed before the TCP connection is dropped."""
    retry_after: int = 1
    """``Retry-After`` seconds on a handshake refused for a connection limit."""
    server_name: str = "wshub"
    fast_path: bool = True
    """Write pre-built frames straight to the transport when the server offers it."""

    @property
    def hard_frame_bytes(self) -> int:
        """The cap above which a frame closes the connection with 1009.

        At least 1 MiB and at least 16 times the processed limit, as the protocol promises,
        so that an oversized frame normally gets a ``too_large`` answer, not a close.
        """
        return max(MIB, 16 * self.max_frame_bytes)

    def validate(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value}")
        for name in _AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.broker_timeout <= 0:
            raise ValueError(f"broker_timeout must be above 0, got {self.broker_timeout}")
        if self.retry_after < 1:
            raise ValueError(f"retry_after must be at least 1, got {self.retry_after}")
