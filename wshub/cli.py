"""The ``wshub`` command line. Every ``serve`` flag can also be set as ``WSHUB_<FLAG>``."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import sys
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


log = logging.getLogger("wshub.cli")


def _opt(help: str, env: str, show_default: bool | str = True) -> Any:
    return typer.Option(help=help, envvar=f"WSHUB_{env}", show_default=show_default)


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host``; a name other than localhost may not be."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    jwt_secret: Annotated[
        str,
        _opt(
            "HS256 secret (at least 32 bytes): clients need a JWT. Unset: open mode.",
            "JWT_SECRET",
            "none: open mode",
        ),
    ] = "",
    jwt_public_key: Annotated[
        str,
        _opt(
            "PEM public key file (RSA: RS256, EC P-256: ES256): clients need a JWT.",
            "JWT_PUBLIC_KEY",
            "none: open mode",
        ),
    ] = "",
    allowed_origins: Annotated[
        str,
        _opt(
            "Comma-separated origins allowed to connect; any other Origin gets 403.",
            "ALLOWED_ORIGINS",
            "any origin",
        ),
    ] = "",
    api_key: Annotated[
        str,
        _opt(
            "Key for the HTTP API (/api, header 'Authorization: apikey KEY').",
            "API_KEY",
            "none: API off",
        ),
    ] = "",
    fast_path: Annotated[
        bool,
        _opt(
            "Write each frame's pre-built bytes straight to the socket (uvicorn only); "
            "--no-fast-path sends every frame through ASGI.",
            "FAST_PATH",
        ),
    ] = True,
    log_level: Annotated[str, _opt("debug, info, warning or error.", "LOG_LEVEL")] = "info",
) -> None:
    """Run a wshub node: /ws (JSON protocol), /ws/{client_id} (plain-text chat), the chat
    page at /, the dashboard at /admin, /metrics, /asyncapi.json and /healthz."""
    import msgspec
    import uvicorn

    from wshub.brokers import is_shared
    from wshub.server import SERVE_CONFIG, ServeConfig, build_app

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
        fast_path=fast_path,
    )
    config = ServeConfig(
        broker=broker,
        settings=settings,
        jwt_secret=jwt_secret or None,
        jwt_public_key=jwt_public_key or None,
        allowed_origins=[o for o in allowed_origins.split(",") if o.strip()],
        api_key=api_key or None,
    )
    try:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if workers > 1 and not is_shared(broker):
            raise ValueError(
                f"--workers {workers} needs a shared broker such as redis://HOST:PORT/0: with "
                f"{broker} each worker would be a separate hub whose clients cannot reach "
                "each other"
            )
        app_ = build_app(config)  # validates every setting before anything listens
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    level = log_level.lower()
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if config.jwt_secret is None and config.jwt_public_key is None and not is_loopback(host):
        log.warning(
            "OPEN MODE on %s: no --jwt-secret or --jwt-public-key, so anyone who can reach "
            "this address connects as any user they name and may join and publish anywhere",
            host,
        )
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
        uvicorn.Server(uvicorn.Config(app_, **options)).run()
        return
    # Each worker builds its own hub (its own node id) from the same configuration.
    os.environ[SERVE_CONFIG] = msgspec.json.encode(config).decode()
    uvicorn.run("wshub.server:app_from_environment", factory=True, workers=workers, **options)


_URL = typer.Option(help="The wshub server.", envvar="WSHUB_URL", show_default=True)
_TOKEN = typer.Option(help="A JWT, when the server has auth.", envvar="WSHUB_TOKEN")
_USER = typer.Option(help="Your user id in open mode.", envvar="WSHUB_USER")


@app.command()
def listen(
    channel: Annotated[str, typer.Argument(help="The channel to follow, e.g. chat:lobby.")],
    url: Annotated[str, _URL] = "ws://127.0.0.1:8000",
    token: Annotated[str | None, _TOKEN] = None,
    user: Annotated[str | None, _USER] = None,
    count: Annotated[int, typer.Option(help="Stop after this many messages (0: never).")] = 0,
) -> None:
    """Print a channel's messages as JSON lines, reconnecting and resuming as needed."""
    from wshub.client import Client, Gap, Refused

    def gap(g: Gap) -> None:
        typer.echo(f"resume refused: messages after offset {g.last_offset} are lost", err=True)

    async def run() -> None:
        async with Client(url, token=token, user=user) as client:
            seen = 0
            async for msg in client.subscribe(channel, on_gap=gap):
                line = {
                    "channel": msg.channel,
                    "offset": msg.offset,
                    "epoch": msg.epoch,
                    "from": msg.sender,
                    "data": msg.data,
                    "ts": msg.ts,
                }
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    return

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except (Refused, OSError) as exc:
        typer.echo(f"cannot connect to {url}: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def publish(
    channel: Annotated[str, typer.Argument(help="The channel to publish to.")],
    data: Annotated[str, typer.Argument(help="JSON; text that is not JSON is sent as a string.")],
    url: Annotated[str, _URL] = "ws://127.0.0.1:8000",
    token: Annotated[str | None, _TOKEN] = None,
    user: Annotated[str | None, _USER] = None,
    text: Annotated[bool, typer.Option("--text", help="Send DATA as a string, always.")] = False,
) -> None:
    """Publish one message and print its channel and offset."""
    from wshub.client import Client, Refused, ServerError

    payload: Any = data
    if not text:
        try:
            payload = json.loads(data)
        except ValueError:
            payload = data

    async def run() -> int:
        async with Client(url, token=token, user=user, reconnect=False) as client:
            return await client.publish(channel, payload)

    try:
        offset = asyncio.run(run())
    except ServerError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(1) from None
    except (Refused, OSError) as exc:
        typer.echo(f"cannot connect to {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"channel": channel, "offset": offset}))


@app.command()
def token(
    user: Annotated[str, typer.Option(help="The token's user id (the sub claim).")],
    join: Annotated[
        list[str] | None,
        typer.Option(help="A channel pattern the user may join; repeatable. * is a wildcard."),
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option(help="A channel pattern the user may publish to; repeatable."),
    ] = None,
    ttl: Annotated[
        int, typer.Option(help="Seconds until the token expires.", min=1, show_default=True)
    ] = 3600,
    jwt_secret: Annotated[
        str,
        _opt("The HS256 secret the server verifies with.", "JWT_SECRET", False),
    ] = "",
) -> None:
    """Print a development token (HS256) signed with the server's secret."""
    from wshub.auth import mint_token

    if not jwt_secret:
        raise typer.BadParameter("set WSHUB_JWT_SECRET or --jwt-secret", param_hint="--jwt-secret")
    try:
        typer.echo(mint_token(jwt_secret, user, join or (), publish or (), ttl))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def bench(
    url: Annotated[str, typer.Argument(help="The wshub server.", envvar="WSHUB_URL")] = (
        "ws://127.0.0.1:8000"
    ),
    receivers: Annotated[int, typer.Option(help="Receiving connections.")] = 100,
    channels: Annotated[int, typer.Option(help="Channels; receiver i joins channel i mod C.")] = 1,
    publishers: Annotated[
        int, typer.Option(help="Publishing connections, each in its own process.")
    ] = 1,
    rate: Annotated[
        float,
        typer.Option(
            help="Publications per second, all publishers together (0: as fast "
            "as the slowest receiver keeps up)."
        ),
    ] = 0.0,
    duration: Annotated[float, typer.Option(help="Seconds of publishing.")] = 10.0,
    size: Annotated[int, typer.Option(help="Padding bytes added to each payload.")] = 16,
    window: Annotated[
        int,
        typer.Option(help="Saturation only: publications the slowest receiver may lag behind."),
    ] = 64,
    processes: Annotated[
        int, typer.Option(help="Receiver processes (0: one per core, >= 100 receivers each).")
    ] = 0,
    client: Annotated[
        str, typer.Option(help="WebSocket client: auto (picows if installed), picows, websockets.")
    ] = "auto",
    server_pid: Annotated[
        int | None,
        typer.Option(
            help="The server's pid (local servers): report its CPU and memory, with "
            "its child processes (--workers)."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    plot: Annotated[
        str | None,
        typer.Option(help="Write latency over time and a histogram to this PNG (matplotlib)."),
    ] = None,
) -> None:
    """Load-test a wshub server: receivers on channels, publishers publishing, and what
    arrives how fast (delivered msgs/s, delivery %, latency percentiles, server CPU)."""
    from wshub.bench import BenchConfig, run_bench
    from wshub.bench.display import LiveView
    from wshub.bench.links import available_client

    if server_pid is not None and not os.path.exists(f"/proc/{server_pid}/stat"):
        raise typer.BadParameter(f"no process {server_pid} (this needs Linux /proc)")
    for name, value in (
        ("receivers", receivers),
        ("channels", channels),
        ("publishers", publishers),
    ):
        if value < (0 if name == "receivers" else 1):
            raise typer.BadParameter(f"{name} must be at least 1, got {value}")
    if rate < 0 or duration <= 0 or size < 0 or window < 1 or processes < 0:
        raise typer.BadParameter("rate, duration, size, window and processes must be positive")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise typer.BadParameter(
                "--plot needs matplotlib: pip install 'wshub[bench]'"
            ) from None
    try:
        chosen = available_client(client)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    config = BenchConfig(
        url=url,
        receivers=receivers,
        channels=channels,
        publishers=publishers,
        rate=rate,
        duration=duration,
        size=size,
        window=window,
        processes=processes,
        client=chosen,
        server_pid=server_pid,
    )
    try:
        with LiveView() as view:
            result = run_bench(config, view.update)
    except (OSError, RuntimeError) as exc:
        typer.echo(f"benchmark failed against {url}: {exc}", err=True)
        raise typer.Exit(1) from None
    if plot is not None:
        from wshub.bench.plot import plot as draw

        draw(result, plot)
    if json_out:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        typer.echo(result.to_text())
    if not result.connected and receivers:
        raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print the wshub version."""
    typer.echo(__version__)


def main() -> None:
    app()
