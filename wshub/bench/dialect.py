"""What the load generator says to a server: wshub's protocol, or a peer's for comparison.

The generator itself knows nothing of any protocol. A :class:`Dialect` is plain data (so it
crosses a ``spawn`` process boundary): where to connect, the handshake steps that end with the
connection subscribed, how a publication is written, and which frames are errors.

Every dialect carries the same payload, written by the publisher::

    {"t":<send time, s since the epoch>,"p":<publisher>,"s":<sequence>,"x":"<padding>"}

Receivers find it in any frame by the ``"t":`` key, whatever envelope the server puts around
it (wshub's ``message`` frame, Socket.IO's ``42["message",...]``, the FastAPI tutorial's
``Client says: ...``), so every server is measured the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WSHUB", "Dialect", "Step"]


@dataclass(frozen=True, slots=True)
class Step:
    """Send ``send`` (if any), then wait for a frame containing ``expect`` (if any).

    Both may contain ``{channel}`` and ``{user}``.
    """

    send: str = ""
    expect: str = ""


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    #: Path and query of a receiver's / publisher's URL, after the server's base URL.
    receiver_path: str
    publisher_path: str
    #: Steps that leave a receiver subscribed to ``{channel}``.
    join: tuple[Step, ...]
    #: Steps that leave a publisher ready to publish.
    greet: tuple[Step, ...]
    #: One publication: ``{channel}`` and ``{data}`` (the payload, JSON) are filled in.
    publish: str
    #: A frame containing this is an error reported by the server.
    error: str = ""
    #: Keepalive the server expects the client to answer: (frame received, reply).
    keepalive: tuple[str, str] = ("", "")


#: wshub's own protocol (``docs/protocol.md``): ``welcome``, then ``join`` answered by ``joined``,
#: then ``message`` frames. Receivers share one user id, so joins cause no ``member_joined``
#: fan-out between receivers (N joins would otherwise send N²/2 presence frames).
WSHUB = Dialect(
    name="wshub",
    receiver_path="/ws?user={user}",
    publisher_path="/ws?user={user}",
    join=(
        Step(expect='"type":"welcome"'),
        Step(send='{{"type":"join","channel":"{channel}","id":1}}', expect='"type":"joined"'),
    ),
    greet=(Step(expect='"type":"welcome"'),),
    publish='{{"type":"publish","channel":"{channel}","data":{data}}}',
    error='"type":"error"',
)
