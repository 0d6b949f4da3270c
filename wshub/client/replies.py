"""Requests waiting for their reply, matched by the ``id`` the client gave each frame."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Iterator

from wshub.client.frames import FrameDict

__all__ = ["Replies"]


class Replies:
    """The requests sent and not yet answered: a reply carries its request's ``id``.

    The length of each request's frame is kept too: a ``too_large`` error comes without an
    id (the server did not read a frame over its limit, so it could not copy the id).
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[FrameDict]] = {}
        self._sizes: dict[int, int] = {}

    @contextlib.contextmanager
    def expect(self, frame: FrameDict) -> Iterator[tuple[str, asyncio.Future[FrameDict]]]:
        """Give ``frame`` a fresh id; the text to send and the future of its reply, which
        is forgotten when the block ends."""
        frame_id = next(self._ids)
        future: asyncio.Future[FrameDict] = asyncio.get_running_loop().create_future()
        self._pending[frame_id] = future
        text = json.dumps({**frame, "id": frame_id})
        self._sizes[frame_id] = len(text)
        try:
            yield text, future
        finally:
            self._pending.pop(frame_id, None)
            self._sizes.pop(frame_id, None)

    def answer(self, frame: FrameDict) -> bool:
        """Hand a frame from the server to the request it replies to; whether one took it."""
        future = self._pending.get(frame.get("id", -1)) if "id" in frame else None
        if future is None and frame.get("type") == "error" and frame.get("code") == "too_large":
            future = self._largest()
        if future is None or future.done():
            return False
        future.set_result(frame)
        return True

    def fail(self, exc: BaseException) -> None:
        """Fail every request waiting: its reply will not come on this link."""
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    def _largest(self) -> asyncio.Future[FrameDict] | None:
        """The request an id-less ``too_large`` answers: the largest frame waiting."""
        if not self._sizes:
            return None
        return self._pending.get(max(self._sizes, key=self._sizes.__getitem__))
