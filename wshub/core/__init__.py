"""The hub: connections, channel subscriptions, presence, direct delivery, limits, and the
repair of gaps. It talks to a Broker and to connections through small interfaces; it knows no
HTTP, no FastAPI, no uvicorn and no Redis."""
