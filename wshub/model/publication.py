"""One message published to a channel, with the position a broker gave it."""

from __future__ import annotations

from msgspec import Raw

from wshub import protocol
from wshub.protocol.wire import SharedFrame

__all__ = ["Publication"]


class Publication:
    """A channel message with its offset and epoch.

    ``data`` is the raw JSON the publisher sent. ``frame`` is the ``message`` frame, encoded
    on first use and then shared by every subscriber, every history reply and every recovery
    (its wire bytes too, framed once, on the fast path).
    """

    __slots__ = ("_frame", "channel", "data", "epoch", "offset", "sender", "ts")

    def __init__(
        self, channel: str, offset: int, epoch: str, sender: str | None, data: bytes, ts: int
    ) -> None:
        self.channel = channel
        self.offset = offset
        self.epoch = epoch
        self.sender = sender
        self.data = data
        self.ts = ts
        self._frame: SharedFrame | None = None

    @property
    def frame(self) -> SharedFrame:
        frame = self._frame
        if frame is None:
            frame = self._frame = SharedFrame(self._encode())
        return frame

    def text(self) -> str:
        """The ``message`` frame's text, encoded now unless already cached, and not kept: for
        one reader (a history page, a recovery), whose copy must not live as long as the
        history it was read from."""
        return self._frame.text if self._frame is not None else self._encode()

    def _encode(self) -> str:
        return protocol.encode(
            protocol.Message(
                channel=self.channel,
                offset=self.offset,
                epoch=self.epoch,
                from_=self.sender,
                data=Raw(self.data),
                ts=self.ts,
            )
        )

    def __repr__(self) -> str:
        return f"Publication({self.channel!r}, offset={self.offset}, epoch={self.epoch!r})"
