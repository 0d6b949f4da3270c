"""Settings: every limit with its safe default, in one place.

Library users pass a :class:`Settings` to :class:`wshub.Hub`. ``wshub serve`` takes the same
fields as flags, ``WSHUB_*`` variables and TOML keys: its ``ServeConfig``
(:mod:`wshub.cli.options`) is a :class:`Settings` with the server's own settings added, and
each field declared with :func:`setting` carries the help and checks the command line shows.
The defaults are the ones docs/protocol.md names ("Server defaults").
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Final

__all__ = ["GROUPS", "MIB", "Settings", "setting"]

MIB = 1024 * 1024

GROUPS: Final = ("node", "limits", "http", "timing", "stop", "access", "writes", "logs")
"""The order in which ``wshub serve --help`` and ``wshub config`` list the settings: by group,
then as declared, the hub's fields (declared here) among the server's own."""

_AT_LEAST_ONE = (
    "max_frame_bytes",
    "queue_size",
    "queue_bytes",
    "max_channels",
    "history_size",
    "max_meta_bytes",
)


def setting(
    default: Any,
    help: str,
    *,
    group: str,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    shown: str | None = None,
) -> Any:
    """Declare one setting of ``wshub serve``: a dataclass field with its help and checks.

    ``group`` is one of :data:`GROUPS`; ``shown`` replaces the default in the help text, where
    the bare value says little.
    """
    assert group in GROUPS, group
    meta = {"help": help, "group": group, "choices": choices, "minimum": minimum, "shown": shown}
    return field(default=default, metadata=meta)


def _limit(default: Any, help: str, minimum: float | None = None) -> Any:
    return setting(default, help, group="limits", minimum=minimum)


def _timing(default: Any, help: str, minimum: float | None = None) -> Any:
    return setting(default, help, group="timing", minimum=minimum)


@dataclass(frozen=True, slots=True)
class Settings:
    """What a node allows and how it behaves. All sizes in bytes, times in seconds.

    Each field's help is the text of its ``wshub serve`` flag (docs/configuration.md).
    """

    max_connections: int = _limit(10_000, "Connections per node; more are refused with 503.")
    max_connections_per_user: int = _limit(0, "Connections per user on a node (0: no limit).")
    max_frame_bytes: int = _limit(
        65_536,
        "Largest frame processed; larger ones get too_large, and above max(1 MiB, 16x this) "
        "the connection closes with 1009.",
    )
    rate_limit: float = _limit(0, "Frames per second per connection (0: no limit).")
    max_channels: int = _limit(128, "Channels one connection may join.")
    unjoined_read_rate: float = _limit(
        2,
        "history/presence requests per second (bursts of --max-channels) for channels a "
        "connection has not joined; more get 'limit' (0: no limit).",
    )
    max_meta_bytes: int = _limit(1024, "Bytes of presence meta in one join; more get 'too_large'.")
    queue_size: int = _limit(
        1024, "Outbound frames queued per connection; overflow closes it (4008)."
    )
    queue_bytes: int = _limit(
        MIB, "Outbound bytes queued per connection, replies included; more closes it (4008)."
    )
    history_size: int = _limit(100, "Messages kept per channel.")
    history_ttl: float = _limit(300, "Seconds a message stays in history.")
    ping_interval: float = _limit(20, "Seconds between WebSocket pings (0: off).")
    ping_timeout: float = _limit(20, "Seconds without a pong before a peer is dropped.")
    presence_ttl: float = _limit(
        30, "Seconds for a vanished node to leave presence (shared brokers)."
    )
    reply_timeout: float = _timing(
        5,
        "Seconds within which every client frame is answered even when the broker is slow or "
        "unreachable (error timeout or unavailable); keep it below --ping-timeout (0: no bound).",
    )
    idempotency_ttl: float = _timing(
        300,
        "Seconds a publish's idempotency_key is remembered: a repeat is answered as the first.",
    )
    auth_timeout: float = _timing(
        10,
        "Seconds a connection opened without a token (with auth configured) has to send its "
        "auth frame; then it is closed with 4003.",
        minimum=0.1,
    )
    broker_timeout: float = _timing(
        10,
        "Seconds a shared broker may stay silent before the node takes it for dead: commands "
        "get timeout, a quiet pub/sub link is replaced (/readyz says 503 meanwhile).",
        minimum=0.1,
    )
    fast_path: bool = setting(
        True,
        "Write each frame's pre-built bytes straight to the socket; --no-fast-path sends "
        "every frame through ASGI.",
        group="writes",
    )
    # Not settings of `wshub serve` (no help): the library's alone.
    close_timeout: float = 5
    """Seconds a closing frame may wait to be flushed before the TCP connection is dropped."""
    retry_after: int = 1
    """``Retry-After`` seconds on a handshake refused for a connection limit."""
    server_name: str = "wshub"

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
