"""python-socketio (ASGI, under uvicorn): ``join`` enters a room (acknowledged), ``publish``
emits the data to the room's members as a ``message`` event."""

from __future__ import annotations

from typing import Any

import socketio

sio = socketio.AsyncServer(async_mode="asgi")
app = socketio.ASGIApp(sio)


@sio.event
async def join(sid: str, room: str) -> str:
    await sio.enter_room(sid, room)
    return "ok"


@sio.event
async def publish(sid: str, room: str, data: Any) -> None:
    await sio.emit("message", data, room=room)
