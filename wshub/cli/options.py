"""The settings of ``wshub serve``: one table for the flags, the ``WSHUB_*`` variables, the TOML
file and ``wshub config``.

Each setting is one field of :class:`ServeConfig`, declared with :func:`setting`. The CLI builds
its typer options from these fields, the TOML loader reads the same names, and ``wshub config``
lists them, so adding a setting is one line here.

Precedence, highest first: a flag, its ``WSHUB_<NAME>`` variable, the TOML file (``--config``
or ``WSHUB_CONFIG``), the default. The CLI learns from click which of the first two (or
neither) gave a value; :func:`resolve` does the rest and validates the result.
"""

from __future__ import annotations

import json
import tomllib
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from wshub.brokers import SCHEMES, is_shared
from wshub.core.auth import TokenVerifier
from wshub.model.config import Settings
from wshub.redaction import MASK, is_secret, redact_url
from wshub.transport.uvicorn_http import RequestLimits

__all__ = [
    "ConfigError",
    "Origin",
    "ServeConfig",
    "Setting",
    "describe",
    "masked",
    "read_toml",
    "resolve",
    "settings_table",
    "token_verifier",
]

_D: Final = Settings()
_R: Final = RequestLimits()
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")


class ConfigError(ValueError):
    """A setting's value is invalid; the message names the setting and where it came from."""


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    shown: str | None = None,
) -> Any:
    """Declare one setting of :class:`ServeConfig` (a dataclass field with its metadata).

    ``shown`` replaces the default in the help text, where the bare value says little.
    """
    meta = {"help": help, "choices": choices, "minimum": minimum, "shown": shown}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything ``wshub serve`` can be told. Field names are the TOML keys; the flag is the
    name with ``-`` for ``_``, the variable ``WSHUB_`` plus the name in capitals."""

    host: str = setting("127.0.0.1", "Address to listen on.")
    port: int = setting(8000, "Port to listen on.", minimum=0)
    broker: str = setting(
        "memory://",
        "Broker URL: memory:// (one process) or redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for "
        "TLS) to share channels, presence and history between processes and machines.",
    )
    workers: int = setting(
        1, "Worker processes on one port; more than 1 needs a shared broker.", minimum=1
    )
    max_connections: int = setting(
        _D.max_connections, "Connections per node; more are refused with 503."
    )
    max_connections_per_user: int = setting(
        _D.max_connections_per_user, "Connections per user on a node (0: no limit)."
    )
    max_frame_bytes: int = setting(
        _D.max_frame_bytes,
        "Largest frame processed; larger ones get too_large, and above max(1 MiB, 16x this) "
        "the connection closes with 1009.",
    )
    rate_limit: float = setting(_D.rate_limit, "Frames per second per connection (0: no limit).")
    max_channels: int = setting(_D.max_channels, "Channels one connection may join.")
    unjoined_read_rate: float = setting(
        _D.unjoined_read_rate,
        "history/presence requests per second (bursts of --max-channels) for channels a "
        "connection has not joined; more get 'limit' (0: no limit).",
    )
    max_meta_bytes: int = setting(
        _D.max_meta_bytes, "Bytes of presence meta in one join; more get 'too_large'."
    )
    queue_size: int = setting(
        _D.queue_size, "Outbound frames queued per connection; overflow closes it (4008)."
    )
    queue_bytes: int = setting(
        _D.queue_bytes,
        "Outbound bytes queued per connection, replies included; more closes it (4008).",
    )
    history_size: int = setting(_D.history_size, "Messages kept per channel.")
    history_ttl: float = setting(_D.history_ttl, "Seconds a message stays in history.")
    ping_interval: float = setting(_D.ping_interval, "Seconds between WebSocket pings (0: off).")
    ping_timeout: float = setting(
        _D.ping_timeout, "Seconds without a pong before a peer is dropped."
    )
    presence_ttl: float = setting(
        _D.presence_ttl, "Seconds for a vanished node to leave presence (shared brokers)."
    )
    request_timeout: float = setting(
        _R.timeout,
        "Seconds for an HTTP request (its head and body) to arrive complete; a slower one "
        "gets 408, a socket that sent nothing is closed.",
        minimum=0.1,
    )
    max_request_line: int = setting(
        _R.max_line,
        "Bytes in an HTTP request line (more: 414) and in any one header line (more: 431).",
        minimum=256,
    )
    max_header_bytes: int = setting(
        _R.max_head, "Bytes of an HTTP request's line and headers together; more: 431.", minimum=256
    )
    max_headers: int = setting(_R.max_headers, "Headers in one HTTP request; more: 431.", minimum=1)
    max_pending_requests: int = setting(
        _R.max_pending,
        "Sockets that have not sent a complete request head (at most half the file-descriptor "
        "limit); beyond it the oldest is closed.",
        minimum=1,
    )
    reply_timeout: float = setting(
        _D.reply_timeout,
        "Seconds within which every client frame is answered even when the broker is slow or "
        "unreachable (error timeout or unavailable); keep it below --ping-timeout (0: no bound).",
    )
    idempotency_ttl: float = setting(
        _D.idempotency_ttl,
        "Seconds a publish's idempotency_key is remembered: a repeat is answered as the first.",
    )
    broker_timeout: float = setting(
        _D.broker_timeout,
        "Seconds a shared broker may stay silent before the node takes it for dead: commands "
        "get timeout, a quiet pub/sub link is replaced (/readyz says 503 meanwhile).",
        minimum=0.1,
    )
    drain_seconds: float = setting(
        10,
        "On SIGTERM/SIGINT, seconds over which clients are closed with 1001, in batches, so "
        "they do not all reconnect at once (0: all at once). A second signal exits at once.",
        minimum=0,
    )
    jwt_secret: str = setting(
        "",
        "HS256 secret (at least 32 bytes): clients need a JWT.",
        shown="none: open mode",
    )
    jwt_public_key: str = setting(
        "",
        "PEM public key file (RSA: RS256, EC P-256: ES256): clients need a JWT.",
        shown="none: open mode",
    )
    allowed_origins: str = setting(
        "",
        "Comma-separated origins allowed to connect; any other Origin gets 403.",
        shown="any origin",
    )
    api_key: str = setting(
        "",
        "Key for the HTTP API (/api) and the dashboard's data (/admin/stats), sent as "
        "'Authorization: apikey KEY'.",
        shown="none: API off",
    )
    fast_path: bool = setting(
        True,
        "Write each frame's pre-built bytes straight to the socket; --no-fast-path sends "
        "every frame through ASGI.",
    )
    log_level: str = setting("info", "debug, info, warning or error.", choices=LOG_LEVELS)
    log_format: str = setting(
        "text", "text (readable) or json (one JSON object per line).", choices=LOG_FORMATS
    )

    def request_limits(self) -> RequestLimits:
        """The limits on every HTTP request, before the application sees it."""
        return RequestLimits(
            timeout=self.request_timeout,
            max_line=self.max_request_line,
            max_head=self.max_header_bytes,
            max_headers=self.max_headers,
            max_pending=self.max_pending_requests,
        )

    def settings(self) -> Settings:
        """The hub's limits, taken from the fields that :class:`Settings` shares."""
        names = {f.name for f in fields(Settings)}
        return Settings(**{k: getattr(self, k) for k in names if hasattr(self, k)})


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the table: a :class:`ServeConfig` field with its type and help."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...]
    minimum: float | None
    shown: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "WSHUB_" + self.name.upper()

    @property
    def secret(self) -> bool:
        return is_secret(self.name)


def settings_table() -> list[Setting]:
    """Every setting, in declaration order."""
    hints = typing.get_type_hints(ServeConfig)
    table = []
    for f in fields(ServeConfig):
        assert f.default is not MISSING
        table.append(
            Setting(
                f.name,
                hints[f.name],
                f.default,
                f.metadata["help"],
                f.metadata["choices"],
                f.metadata["minimum"],
                f.metadata["shown"],
            )
        )
    return table


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value came from: ``flag``, ``env``, ``file`` or ``default``, and which one."""

    kind: str
    where: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.where}" if self.where else self.kind


def read_toml(path: Path) -> dict[str, Any]:
    """The settings in a TOML file: top-level keys, ``_`` or ``-`` alike; unknown keys fail."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config: file {path} not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config: cannot read {path}: {exc}") from None
    known = {s.name for s in settings_table()}
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"config: unknown setting {key!r} in {path}")
        values[name] = value
    return values


def resolve(
    given: dict[str, tuple[Any, Origin]],
    file_values: dict[str, Any] | None = None,
    file_name: str = "",
) -> tuple[ServeConfig, dict[str, Origin]]:
    """The effective configuration and each value's origin.

    ``given`` holds the values that a flag or a variable set (the CLI knows which); for the
    others, the file's value wins over the default. Every value is type-checked and
    range-checked here, with an error naming the setting and its origin.
    """
    file_values = file_values or {}
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for s in settings_table():
        if s.name in given:
            value, origin = given[s.name]
        elif s.name in file_values:
            value, origin = file_values[s.name], Origin("file", file_name)
        else:
            value, origin = s.default, Origin("default")
        values[s.name] = _checked(s, value, origin)
        origins[s.name] = origin
    config = ServeConfig(**values)
    _check_together(config, origins)
    return config, origins


def _checked(s: Setting, value: Any, origin: Origin) -> Any:
    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{s.name} {problem}, got {_shown(s, value)} (from {origin})")

    if s.type is bool:
        if not isinstance(value, bool):
            raise fail("must be true or false")
    elif s.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("must be a whole number")
    elif s.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("must be a number")
        value = float(value)
    elif s.type is str and not isinstance(value, str):
        raise fail("must be a string")
    if s.type is str and is_mask(s, value):
        # What `wshub config` prints in place of a secret: never a usable value.
        raise ConfigError(
            f"{s.name} holds {MASK!r}, the mask `wshub config` prints in place of a secret "
            f"(from {origin}): give the real value, e.g. in {s.env}"
        )
    if s.choices and str(value).lower() not in s.choices:
        raise fail(f"must be one of {', '.join(s.choices)}")
    if s.choices:
        value = str(value).lower()
    if s.minimum is not None and value < s.minimum:
        raise fail(f"must be at least {s.minimum:g}")
    return value


def _check_together(config: ServeConfig, origins: dict[str, Origin]) -> None:
    try:
        config.settings().validate()
    except ValueError as exc:
        name = str(exc).split(" ", 1)[0]
        where = f" (from {origins[name]})" if name in origins else ""
        raise ConfigError(f"{exc}{where}") from None
    scheme = config.broker.partition("://")[0] if "://" in config.broker else ""
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unknown broker URL {redact_url(config.broker)!r}: expected one of "
            f"{', '.join(SCHEMES)}:// (from {origins['broker']})"
        )
    if config.jwt_secret and config.jwt_public_key:
        raise ConfigError("give jwt_secret or jwt_public_key, not both")
    try:
        token_verifier(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if config.workers > 1 and not is_shared(config.broker):
        raise ConfigError(
            f"--workers {config.workers} needs a shared broker such as redis://HOST:PORT/0: "
            f"with {config.broker} each worker would be a separate hub whose clients cannot "
            "reach each other"
        )


def token_verifier(config: ServeConfig) -> TokenVerifier | None:
    """The JWT verifier the settings ask for; None in open mode. ValueError if unusable."""
    if config.jwt_secret:
        return TokenVerifier.from_secret(config.jwt_secret)
    if config.jwt_public_key:
        return TokenVerifier.from_public_key_file(config.jwt_public_key)
    return None


def _shown(s: Setting, value: Any) -> str:
    if s.secret:
        return MASK if value else "''"
    if isinstance(value, str):
        return repr(redact_url(value))
    return repr(value)


def is_mask(s: Setting, value: str) -> bool:
    """Whether a value is a masked secret: ``***``, or a URL whose password is ``***``."""
    if s.secret:
        return value == MASK
    try:
        return urlsplit(value).password == MASK
    except ValueError:
        return False


def masked(name: str, value: Any) -> Any:
    """A value as it may be shown: secrets masked, passwords cut out of URLs."""
    if is_secret(name):
        return MASK if value else value
    if isinstance(value, str):
        return redact_url(value)
    return value


def describe(config: ServeConfig, origins: dict[str, Origin]) -> str:
    """``wshub config``'s output: TOML lines, each commented with where its value came from.

    Secrets stay masked (``***``). Written to a file and read back, a mask is refused with an
    error naming the setting (:func:`is_mask`): a config that ran with ``***`` as the API key,
    or with the JWT secret left out (open mode), would be a working server with wrong secrets.
    """
    rows = []
    hidden = False
    for s in settings_table():
        real = getattr(config, s.name)
        value = masked(s.name, real)
        text = json.dumps(value) if isinstance(value, str) else _toml_scalar(value)
        note = str(origins[s.name])
        if value != real:
            hidden = True
            note += f"; masked: set {s.env}"
        rows.append((f"{s.name} = {text}", note))
    width = max(len(left) for left, _ in rows)
    lines = ["# wshub serve: effective configuration (flag > env > file > default)"]
    if hidden:
        lines.append(
            "# Secrets show as ***, which wshub refuses as a value: set them in WSHUB_* "
            "variables, or here."
        )
    lines += [f"{left.ljust(width)}  # {right}" for left, right in rows]
    return "\n".join(lines)


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)
