"""Where the Redis broker keeps things: the key and pub/sub names, on one Redis or a cluster.

Both layouts keep every key of one channel in one hash slot (``P:{C}:...``: the braces are a
hash tag), so each script touches one slot. They differ in the keys that are not a channel's:

- On one Redis the scripts also update the cluster-wide ones in the same atomic step: the
  channel counts (``P:channels``) and a node's set of channels (``P:node:<id>:chans``), and
  eviction checks the node register (``P:nodes``). ``atomic`` is True.
- On a cluster these live in other slots, so no script may name them. A channel's count is kept
  in its own slot (``P:{C}:channels``, one field), an index of channel names
  (``P:{~channels}``) and the node's channel set are updated by separate, idempotent commands
  (see :mod:`wshub.brokers.redis.presence`), and the node register, its clock and tombstones
  share one slot (``P:{~nodes}:...``) as the heartbeat script needs; the dashboard's figures
  share another (``P:{~stats}:...``). ``~`` is never in a channel name, so no channel's tag
  can be one of these.

Pub/sub names follow the same rule: ``P:{C}:pub`` is in its channel's slot and ``P:user:{U}``
in its user's, which is what sharded pub/sub (``SPUBLISH``) routes by.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "wshub"
    cluster: bool = False

    @property
    def atomic(self) -> bool:
        """Whether the scripts update the cluster-wide keys themselves (one Redis)."""
        return not self.cluster

    @property
    def publish_command(self) -> str:
        """``SPUBLISH`` on a cluster (the message touches only its shard), else ``PUBLISH``."""
        return "SPUBLISH" if self.cluster else "PUBLISH"

    # --- one channel, one slot

    def channel(self, channel: str, part: str) -> str:
        return f"{self.prefix}:{{{channel}}}:{part}"

    def pub(self, channel: str) -> bytes:
        return self.channel(channel, "pub").encode()

    def user(self, user: str) -> bytes:
        return f"{self.prefix}:user:{{{user}}}".encode()

    def node(self, node: str) -> bytes:
        """A node's own pub/sub name: a subscription that every listener session holds."""
        return f"{self.prefix}:node:{node}".encode()

    def target(self, name: bytes) -> tuple[str, str] | None:
        """("c", channel) or ("u", user) for one of this broker's pub/sub names; None for a
        node's own. It subscribes to nothing else, so every name has its prefix."""
        rest = name.decode()[len(self.prefix) + 1 :]
        if rest.startswith("{") and rest.endswith("}:pub"):
            return "c", rest[1:-5]
        if rest.startswith("user:{"):
            return "u", rest[6:-1]
        return None

    def presence(self, channel: str, node: str) -> list[str]:
        """The KEYS of the presence scripts: the node's connections, the users and their meta,
        the channel counts, and (one Redis) the node's channel set."""
        if self.cluster:
            return [
                self.channel(channel, f"conns:{node}"),
                self.channel(channel, "users"),
                self.channel(channel, "umeta"),
                self.channel(channel, "channels"),
            ]
        return [
            self.channel(channel, f"conns:{node}"),
            self.channel(channel, "users"),
            self.channel(channel, "umeta"),
            self.channels,
            self.node_channels(node),
        ]

    # --- cluster-wide

    def _shared(self, group: str, name: str) -> str:
        """``P:group[:name]`` on one Redis; ``P:{~group}:name`` (one slot per group) on a
        cluster, ``all`` standing for no name."""
        if self.cluster:
            return f"{self.prefix}:{{~{group}}}:{name or 'all'}"
        return f"{self.prefix}:{group}" + (f":{name}" if name else "")

    @property
    def channels(self) -> str:
        """One Redis: the hash channel -> joined connections. A cluster: the set of names."""
        return f"{self.prefix}:{{~channels}}" if self.cluster else f"{self.prefix}:channels"

    def node_channels(self, node: str) -> str:
        return f"{self.prefix}:node:{node}:chans"

    def nodes(self, part: str = "") -> str:
        """The node register (``""``), ``clock``, ``evicted``, ``evicting``: one slot."""
        return self._shared("nodes", part)

    def stats(self, node: str | None = None) -> str:
        """The set of nodes that shared figures (None), or one node's figures: one slot."""
        return self._shared("stats", "" if node is None else node)
