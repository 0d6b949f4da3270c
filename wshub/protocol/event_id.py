"""The ``id`` of a Server-Sent Event: a stream's position in every one of its channels.

A browser's ``EventSource`` sends the last ``id`` it saw back as ``Last-Event-ID`` when it
reconnects, to whichever node it reaches. So the id carries everything a node needs to resume
the stream, and only what the whole cluster agrees on: each channel's name, the offset last
delivered, and the epoch of that offset (what ``join`` takes as ``since``).

The format is ``channel~offset~epoch``, repeated for each channel and joined by ``~``:
``chat:lobby~42~9f3c1a2b~news~7~0b6d5e11``. ``~`` is in neither channel names nor epochs, and
every character is one a URL carries as it is, so the same text works as ``?last_event_id=``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from wshub.protocol.names import is_channel_name

__all__ = ["MAX_EVENT_ID", "Position", "format_event_id", "parse_event_id"]

Position = tuple[int, str]
"""A channel's last delivered offset and its epoch."""

MAX_EVENT_ID = 16384
"""Longer ids are not parsed: a stream has at most ``max_channels`` channels, and a header of
this size is already more than any proxy passes."""

_EPOCH = re.compile(r"[A-Za-z0-9_\-.]{1,64}")


def format_event_id(positions: Mapping[str, Position]) -> str:
    """The id naming these positions, in the order given."""
    return "~".join(f"{channel}~{offset}~{epoch}" for channel, (offset, epoch) in positions.items())


def parse_event_id(text: str) -> dict[str, Position] | None:
    """The positions an id names; None when it is not one (the stream then starts afresh)."""
    text = text.strip()
    if not text:
        return {}
    if len(text) > MAX_EVENT_ID:
        return None
    parts = text.split("~")
    if len(parts) % 3:
        return None
    positions: dict[str, Position] = {}
    for i in range(0, len(parts), 3):
        channel, offset, epoch = parts[i : i + 3]
        if not (is_channel_name(channel) and offset.isdigit() and _EPOCH.fullmatch(epoch)):
            return None
        positions[channel] = (int(offset), epoch)
    return positions
