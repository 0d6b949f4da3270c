"""The ``wshub`` command line.

``serve`` and ``config`` take the same options, built from the table in :mod:`wshub.cli.options`
(:mod:`wshub.cli.flags`): each is a flag, a ``WSHUB_<NAME>`` variable, or a key of the TOML file
given by ``--config`` (or ``WSHUB_CONFIG``), in that order of precedence.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from wshub import __version__
from wshub.cli.flags import effective, serve_options

app = typer.Typer(
    help="wshub: a real-time messaging hub on FastAPI (channels, presence, history, limits).",
    no_args_is_help=True,
    add_completion=False,
    # click's plain help wraps long option names and values; rich's tables cut them
    # mid-word at 80 columns ("--max-connections-per…").
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"wshub {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """wshub: a real-time messaging hub on FastAPI (channels, presence, history, limits)."""


@app.command()
@serve_options
def serve(ctx: typer.Context, config: Path | None = None, **values: Any) -> None:
    """Run a wshub node: /ws (JSON protocol), /ws/{client_id} (plain-text chat), the chat
    page at /, the dashboard at /admin, /metrics, /asyncapi.json, /healthz and /readyz.

    SIGTERM or SIGINT drains the node (new clients get 503, connected ones 1001 over
    --drain-seconds), then exits 0; a second signal exits at once."""
    from wshub.cli.node import run

    cfg, _ = effective(ctx, config, values)
    raise typer.Exit(run(cfg))


@app.command("config")
@serve_options
def show_config(ctx: typer.Context, config: Path | None = None, **values: Any) -> None:
    """Print the configuration `wshub serve` would run with (same options), where each value
    came from (flag, env, file or default), secrets masked."""
    from wshub.cli.describe import describe

    cfg, origins = effective(ctx, config, values)
    typer.echo(describe(cfg, origins))


def _opt(help: str, env: str, show_default: bool | str = True) -> Any:
    return typer.Option(help=help, envvar=f"WSHUB_{env}", show_default=show_default)


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
    """Print a channel's messages as JSON lines, reconnecting and resuming as needed.

    It stops, saying why, when the server says not to come back (disconnected, token
    expired); when a resume is refused it refetches the channel's history."""
    from wshub.cli import remote

    with _failures():
        remote.listen(url, channel, token, user, count)


@app.command()
def publish(
    channel: Annotated[str, typer.Argument(help="The channel to publish to.")],
    data: Annotated[str, typer.Argument(help='JSON, e.g. \'{"text": "hi"}\' or \'"hi"\'.')],
    url: Annotated[str, _URL] = "ws://127.0.0.1:8000",
    token: Annotated[str | None, _TOKEN] = None,
    user: Annotated[str | None, _USER] = None,
    text: Annotated[bool, typer.Option("--text", help="Send DATA as a string, not JSON.")] = False,
) -> None:
    """Publish one message and print its channel and offset."""
    from wshub.cli import remote

    with _failures():
        payload = remote.parse_data(data, text)
        offset = remote.publish(url, channel, payload, token, user)
    typer.echo(json.dumps({"channel": channel, "offset": offset}))


@contextlib.contextmanager
def _failures() -> Iterator[None]:
    """One line on stderr and a non-zero exit for what the client commands cannot do."""
    from wshub.cli.remote import Failed

    try:
        yield
    except KeyboardInterrupt:
        pass
    except Failed as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.code) from None


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
    channels: Annotated[
        list[str] | None,
        typer.Option(
            "--channels", help="A channel the server joins the user to at once; repeatable."
        ),
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(
            help="Make a subscription token for this one channel (for join's token field)."
        ),
    ] = None,
    ttl: Annotated[
        int,
        typer.Option(
            help="Seconds until the token expires; 0: no exp claim.", min=0, show_default=True
        ),
    ] = 3600,
    private_key: Annotated[
        Path | None,
        typer.Option(
            help="Sign with this PEM private key: RS256 (RSA) or ES256 (P-256), instead of "
            "the HS256 secret. The server verifies with its public key (--jwt-public-key)."
        ),
    ] = None,
    jwt_secret: Annotated[
        str,
        _opt("The HS256 secret the server verifies with.", "JWT_SECRET", False),
    ] = "",
) -> None:
    """Print a token for a user: a connection token, or with --channel a subscription token.

    Signed HS256 with the server's secret, or RS256/ES256 with --private-key.
    """
    from wshub.core.tokens import Claims, Signer

    try:
        if private_key is not None:
            signer = Signer.from_private_key_file(private_key)
        elif jwt_secret:
            signer = Signer.from_secret(jwt_secret)
        else:
            raise typer.BadParameter(
                "set WSHUB_JWT_SECRET or --jwt-secret, or give --private-key",
                param_hint="--jwt-secret",
            )
        claims = Claims(user, join or (), publish or (), channels or (), channel, ttl)
        typer.echo(signer.sign(claims))
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
    token: Annotated[
        str | None,
        typer.Option(
            help="A server with auth: a JWT for every connection; it must allow joining "
            "and publishing bench-*.",
            envvar="WSHUB_TOKEN",
        ),
    ] = None,
    jwt_secret: Annotated[
        str,
        _opt(
            "A server with auth: its HS256 secret, to mint a token per simulated user.",
            "JWT_SECRET",
            False,
        ),
    ] = "",
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
    if token and jwt_secret:
        raise typer.BadParameter("give --token or --jwt-secret, not both")
    if jwt_secret:
        from wshub.core.auth import TokenVerifier

        try:
            TokenVerifier.from_secret(jwt_secret)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--jwt-secret") from None
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
        token=token or "",
        jwt_secret=jwt_secret,
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
