"""Minimal servers of wshub's peers, each speaking just enough to be measured like wshub.

The "room" peers (Node ``ws``, ``websockets.broadcast()``, broadcaster) share one
mini-protocol: ``/ws?room=R`` joins room R and is answered ``{"type":"joined"}``;
``/ws?room=R&pub=1`` is a publisher whose every text goes, as is, to R's members. The FastAPI
tutorial and python-socketio are measured through their own protocols. See
``benchmarks/contenders.py`` for how each is started and spoken to.
"""
