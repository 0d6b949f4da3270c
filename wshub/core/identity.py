"""Identity inside the connection: the ``auth`` first frame, and ``refresh``.

A client that opens ``/ws`` without a token (so that it stays out of URLs and access logs)
sends it in its first frame. Until then the connection is admitted but nobody's:
:class:`FirstFrame` answers what arrives (``pong`` to ``ping``, ``unauthorized`` to anything
else) and says when the connection is identified, or must close with 4003. Pure: text in,
replies and a verdict out; the transport does the reading, the writing and the timeout.

:func:`refreshed` checks a ``refresh`` frame's token against the connection's user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wshub import protocol
from wshub.core.auth import Identity, TokenRejected, TokenVerifier
from wshub.protocol import CloseCode, ErrorCode, FrameError, FrameId

__all__ = ["FirstFrame", "Step", "expires_field", "refreshed"]

NO_AUTH_YET = 'no identity yet: the first frame must be {"type": "auth", "token": ...}'


@dataclass(slots=True)
class Step:
    """What to do after one frame from a connection not identified yet."""

    replies: list[str] = field(default_factory=list)
    """Frames to send back, in order."""
    identity: Identity | None = None
    """Set when the ``auth`` frame verified: the connection is now this user's."""
    frame_id: FrameId | None = None
    """The ``auth`` frame's ``id``, for the ``welcome`` that answers it."""
    close: tuple[int, str] | None = None
    """Set when the connection must close, after the replies."""


class FirstFrame:
    """The state of a connection waiting for its ``auth`` frame (PROTOCOL.md "Identity inside
    the connection"). One frame at a time; after a :class:`Step` with an identity or a close,
    it has no more to say."""

    __slots__ = ("_max_bytes", "_verifier")

    def __init__(self, verifier: TokenVerifier, max_frame_bytes: int) -> None:
        self._verifier = verifier
        self._max_bytes = max_frame_bytes

    def receive(self, text: str | None) -> Step:
        """One frame: its text, or None for a binary frame."""
        if text is None:
            return _error(ErrorCode.BAD_FRAME, "binary frames are not accepted")
        limit = self._max_bytes
        # As the hub measures: n code points are n to 4n bytes, so encode only when it matters.
        if len(text) > limit or (
            len(text) * 4 > limit and len(text.encode(errors="surrogatepass")) > limit
        ):
            return _error(ErrorCode.TOO_LARGE, f"frame over {limit} bytes")
        try:
            frame = protocol.decode_client_frame(text)
        except FrameError as exc:  # bad input keeps the connection waiting for its auth
            return _error(exc.code, exc.message, exc.frame_id)
        fid = protocol.frame_id(frame)
        match frame:
            case protocol.Ping():
                return Step([protocol.encode(protocol.Pong(id=protocol.reply_id(fid)))])
            case protocol.Auth():
                try:
                    identity = self._verifier.verify(frame.token)
                except TokenRejected as exc:
                    step = _error(ErrorCode.UNAUTHORIZED, str(exc), fid)
                    step.close = (CloseCode.NO_IDENTITY, "no valid identity")
                    return step
                return Step(identity=identity, frame_id=fid)
            case _:
                return _error(ErrorCode.UNAUTHORIZED, NO_AUTH_YET, fid)

    @staticmethod
    def timed_out() -> Step:
        """No ``auth`` within the auth timeout."""
        return Step(close=(CloseCode.NO_IDENTITY, "no auth frame in time"))


def _error(code: ErrorCode, message: str, fid: FrameId | None = None) -> Step:
    return Step([protocol.error(code, message, fid)])


def refreshed(verifier: TokenVerifier | None, user: str, frame: protocol.Refresh) -> Identity:
    """The identity a ``refresh`` frame's token proves for ``user``, or FrameError:
    ``unauthorized`` for a token that does not verify, ``forbidden`` for another user's, and
    ``bad_request`` where there are no tokens (open mode). Nothing changes on an error."""
    fid = protocol.frame_id(frame)
    if verifier is None:
        raise FrameError(ErrorCode.BAD_REQUEST, "no auth configured: nothing to refresh", fid)
    try:
        identity = verifier.verify(frame.token)
    except TokenRejected as exc:
        raise FrameError(ErrorCode.UNAUTHORIZED, str(exc), fid) from None
    if identity.user != user:
        raise FrameError(
            ErrorCode.FORBIDDEN,
            f"the new token is for {identity.user!r}, not this connection's {user!r}",
            fid,
        )
    return identity


def expires_field(expires: float | None) -> int | None:
    """A token's end as ``welcome.expires`` and ``ack.expires`` carry it: whole Unix seconds,
    rounded down, so that a client refreshing "before expires" is never late."""
    return None if expires is None else int(expires)
