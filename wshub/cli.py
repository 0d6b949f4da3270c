"""The ``wshub`` command line. Every ``serve`` flag can also be set as ``WSHUB_<FLAG>``."""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import typer

from wshub import __version__
from wshub.config import Settings

app = typer.Typer(
    help="wshub: a real-time messaging hub on FastAPI (channels, presence, history, limits).",
    no_args_is_help=True,
    add_completion=False,
)

_D = Settings()


def _opt(help: str, env: str) -> Any:
    return typer.Option(help=help, envvar=f"WSHUB_{env}", show_default=True)


@app.command()
def serve(
    host: Annotated[str, _opt("Address to listen on.", "HOST")] = "127.0.0.1",
    port: Annotated[int, _opt("Port to listen on.", "PORT")] = 8000,
    broker: Annotated[
        str,
        _opt(
            "Broker URL: memory:// (one process) or redis://[:PASSWORD@]HOST:PORT/DB "
            "(rediss:// for TLS) to share channels, presence and history between processes "
            "and machines.",
            "BROKER",
        ),
    ] = "memory://",
    workers: Annotated[
        int,
        _opt("Worker processes on one port; more than 1 needs a shared broker.", "WORKERS"),
    ] = 1,
    max_connections: Annotated[
        int, _opt("Connections per node; more are refused with 503.", "MAX_CONNECTIONS")
    ] = _D.max_connections,
    max_connections_per_user: Annotated[
        int,
        _opt("Connections per user on a node (0: no limit).", "MAX_CONNECTIONS_PER_USER"),
    ] = _D.max_connections_per_user,
    max_frame_bytes: Annotated[
        int,
        _opt(
            "Largest frame processed; larger ones get too_large, and above "
            "max(1 MiB, 16x this) the connection closes with 1009.",
            "MAX_FRAME_BYTES",
        ),
    ] = _D.max_frame_bytes,
    rate_limit: Annotated[
        float, _opt("Frames per second per connection (0: no limit).", "RATE_LIMIT")
    ] = _D.rate_limit,
    max_channels: Annotated[
        int, _opt("Channels one connection may join.", "MAX_CHANNELS")
    ] = _D.max_channels,
    queue_size: Annotated[
        int,
        _opt("Outbound frames queued per connection; overflow closes it (4008).", "QUEUE_SIZE"),
    ] = _D.queue_size,
    history_size: Annotated[
        int, _opt("Messages kept per channel.", "HISTORY_SIZE")
    ] = _D.history_size,
    history_ttl: Annotated[
        float, _opt("Seconds a message stays in history.", "HISTORY_TTL")
    ] = _D.history_ttl,
    ping_interval: Annotated[
        float, _opt("Seconds between WebSocket pings (0: off).", "PING_INTERVAL")
    ] = _D.ping_interval,
    ping_timeout: Annotated[
        float, _opt("Seconds without a pong before a peer is dropped.", "PING_TIMEOUT")
    ] = _D.ping_timeout,
    presence_ttl: Annotated[
        float,
        _opt("Seconds for a vanished node to leave presence (shared brokers).", "PRESENCE_TTL"),
    ] = _D.presence_ttl,
    log_level: Annotated[str, _opt("debug, info, warning or error.", "LOG_LEVEL")] = "info",
) -> None:
    """Run a wshub node: /ws (JSON protocol), /ws/{client_id} (plain-text chat), /healthz."""
    import msgspec
    import uvicorn

    from wshub.brokers import is_shared
    from wshub.hub import Hub
    from wshub.server import WORKER_CONFIG, WorkerConfig, create_app

    settings = Settings(
        max_connections=max_connections,
        max_connections_per_user=max_connections_per_user,
        max_frame_bytes=max_frame_bytes,
        rate_limit=rate_limit,
        max_channels=max_channels,
        queue_size=queue_size,
        history_size=history_size,
        history_ttl=history_ttl,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        presence_ttl=presence_ttl,
    )
    try:
        settings.validate()
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if workers > 1 and not is_shared(broker):
            raise ValueError(
                f"--workers {workers} needs a shared broker such as redis://HOST:PORT/0: with "
                f"{broker} each worker would be a separate hub whose clients cannot reach "
                "each other"
            )
        hub = Hub(broker, settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    level = log_level.lower()
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "ws": "wshub.uvicorn_ws:WshubWebSocketProtocol",
        "ws_max_size": settings.hard_frame_bytes,
        # Off: deflate compresses every frame once per subscriber, which defeats encoding once.
        "ws_per_message_deflate": False,
        "ws_ping_interval": ping_interval or None,
        "ws_ping_timeout": ping_timeout or None,
        "log_level": level,
        "lifespan": "on",
    }
    if workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(hub), **options)).run()
        return
    # Each worker builds its own hub (its own node id) from the same configuration.
    os.environ[WORKER_CONFIG] = msgspec.json.encode(WorkerConfig(broker, settings)).decode()
    uvicorn.run("wshub.server:app_from_environment", factory=True, workers=workers, **options)


@app.command()
def version() -> None:
    """Print the wshub version."""
    typer.echo(__version__)


def main() -> None:
    app()
