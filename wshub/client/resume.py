"""Resuming the held channels on a new link, so that nothing is lost or handed out twice.

Every channel is joined again with ``since`` (and a fresh subscription token, if the
application gives those). A channel the token's ``channels`` claim holds is different: the
server joins it again right after ``welcome``, and answers ``subscribed`` with its current
position, before the client's own re-join; that re-join, of a channel already joined, replays
nothing. So the messages between the client's last position and the one ``subscribed`` gives
are fetched from the channel's history, and the live messages that come meanwhile wait
behind them; what the history no longer has is a :class:`~wshub.client.frames.Gap`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from wshub.client.channels import Channel, Channels
from wshub.client.frames import ConnectionLost, FrameDict, ServerError
from wshub.client.grants import Grants

__all__ = ["fill", "rejoin"]

log = logging.getLogger("wshub.client")

Request = Callable[[FrameDict], Awaitable[FrameDict]]


async def rejoin(channels: Channels, grants: Grants, request: Request) -> None:
    """Join every channel again, from the last position seen, all at once."""
    names = list(channels)
    tokens = await asyncio.gather(*(grants.token_for(name) for name in names))
    joins = []
    for name, token in zip(names, tokens, strict=True):
        ch = channels.get(name)
        if ch is None:  # left while the tokens were asked for
            continue
        frame = ch.join_frame(name)
        if token is not None:
            frame["token"] = token
        ch.resuming = "since" in frame
        ch.renewing = 0
        joins.append(request(frame))
    for reply in await asyncio.gather(*joins, return_exceptions=True):
        if isinstance(reply, ServerError):
            log.warning("rejoin refused: %s", reply)
        elif isinstance(reply, BaseException):
            raise reply


async def fill(channels: Channels, name: str, ch: Channel, upto: int, request: Request) -> None:
    """Hand out what a held channel missed up to ``upto`` (its ``subscribed`` offset), then
    the live messages held back meanwhile (``ch.filling``)."""
    since, epoch = ch.offset, ch.epoch
    assert since is not None and epoch is not None
    missed: list[FrameDict] = []
    try:
        frame = {"type": "history", "channel": name, "since": {"offset": since, "epoch": epoch}}
        reply = await request({**frame, "limit": upto - since})
        if reply.get("epoch") == epoch:
            missed = [m for m in reply["messages"] if since < m["offset"] <= upto]
    except (ServerError, ConnectionLost, TimeoutError) as exc:
        log.info("could not fetch what %s missed: %r", name, exc)
    if channels.get(name) is not ch:
        return  # left, or taken out, meanwhile
    held, ch.filling = ch.filling or [], None
    for message in missed:
        if message["offset"] == ch.offset + 1:  # type: ignore[operator]
            channels.on_message(message)
    if ch.offset != upto:
        channels.moved(name, ch, upto, epoch, resuming=True)  # what the history lost: a gap
    for message in held:
        channels.on_message(message)
