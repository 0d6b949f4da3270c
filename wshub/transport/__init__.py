"""Sockets: the handshake before the upgrade, uvicorn's WebSocket and HTTP protocols with
wshub's limits, the start-up check of the uvicorn internals they build on, and the fast-path
writer that puts a frame's bytes on a socket without ASGI."""
