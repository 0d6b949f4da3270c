"""A FastAPI app on encode/broadcaster (memory backend), the pattern of broadcaster's README:
each receiver's WebSocket subscribes to a channel and forwards every event to its socket.

Mini-protocol of the "room" peers: ``/ws?room=R`` joins R and gets ``{"type":"joined"}``;
``/ws?room=R&pub=1`` publishes every text it sends to R.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from broadcaster import Broadcast
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

broadcast = Broadcast("memory://")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await broadcast.connect()
    yield
    await broadcast.disconnect()


app = FastAPI(lifespan=lifespan)


@app.websocket("/ws")
async def room(websocket: WebSocket, room: str = "bench", pub: int = 0) -> None:
    await websocket.accept()
    if pub:
        try:
            while True:
                await broadcast.publish(channel=room, message=await websocket.receive_text())
        except WebSocketDisconnect:
            return
    async with broadcast.subscribe(channel=room) as subscriber:
        await websocket.send_text('{"type":"joined"}')
        try:
            async for event in subscriber:  # type: ignore[union-attr]
                if event is None:  # unsubscribed
                    return
                await websocket.send_text(event.message)
        except WebSocketDisconnect:
            return
