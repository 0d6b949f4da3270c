"""The ``wshub`` command line. Every ``serve`` flag can also be set as ``WSHUB_<FLAG>``."""

from __future__ import annotations

import ipaddress
import logging
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
    broker: Annotated[str, _opt("Broker URL: memory:// (one process).", "BROKER")] = "memory://",
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
    log_level: Annotated[str, _opt("debug, info, warning or error.", "LOG_LEVEL")] = "info",
) -> None:
    """Run a wshub node: /ws (JSON protocol), /ws/{client_id} (plain-text chat), /healthz."""
    import uvicorn

    from wshub.auth import TokenVerifier
    from wshub.handshake import Handshake
    from wshub.hub import Hub
    from wshub.server import create_app
    from wshub.uvicorn_ws import WshubWebSocketProtocol

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
    if jwt_secret and jwt_public_key:
        raise typer.BadParameter("give --jwt-secret or --jwt-public-key, not both")
    try:
        settings.validate()
        verifier = (
            TokenVerifier.from_secret(jwt_secret)
            if jwt_secret
            else TokenVerifier.from_public_key_file(jwt_public_key)
            if jwt_public_key
            else None
        )
        hub = Hub(broker, settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    handshake = Handshake(verifier, allowed_origins.split(","))
    level = log_level.lower()
    logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if verifier is None and not is_loopback(host):
        log.warning(
            "OPEN MODE on %s: no --jwt-secret or --jwt-public-key, so anyone who can reach "
            "this address connects as any user they name and may join and publish anywhere",
            host,
        )
    config = uvicorn.Config(
        create_app(hub, handshake, api_key or None),
        host=host,
        port=port,
        ws=WshubWebSocketProtocol,
        ws_max_size=settings.hard_frame_bytes,
        # Off: deflate compresses every frame once per subscriber, which defeats encoding once.
        ws_per_message_deflate=False,
        ws_ping_interval=ping_interval or None,
        ws_ping_timeout=ping_timeout or None,
        log_level=level,
        lifespan="on",
    )
    uvicorn.Server(config).run()


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
def version() -> None:
    """Print the wshub version."""
    typer.echo(__version__)


def main() -> None:
    app()
