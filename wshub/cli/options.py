"""The settings of ``wshub serve``: one table for the flags, the ``WSHUB_*`` variables, the TOML
file and ``wshub config``.

Each setting is one field of :class:`ServeConfig`, declared with
:func:`~wshub.model.config.setting`: the hub's in :class:`~wshub.model.config.Settings`, which
``ServeConfig`` extends, the server's own here. The CLI builds its options from these fields
(:mod:`wshub.cli.flags`), the TOML loader reads the same names, and ``wshub config`` lists them,
so adding a setting is one field.

Precedence, highest first: a flag, its ``WSHUB_<NAME>`` variable, the TOML file (``--config``
or ``WSHUB_CONFIG``), the default. Click applies it and says where each value came from;
:func:`resolve` checks the values, with errors naming the setting and that origin.
"""

from __future__ import annotations

import functools
import tomllib
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from wshub.brokers import SCHEMES, is_shared
from wshub.core.auth import TokenVerifier
from wshub.model.config import GROUPS, Settings, setting
from wshub.redaction import MASK, is_secret, redact_url
from wshub.transport.uvicorn_http import RequestLimits

__all__ = [
    "ConfigError",
    "Origin",
    "ServeConfig",
    "Setting",
    "is_mask",
    "read_toml",
    "resolve",
    "settings_table",
    "token_verifier",
]

_R: Final = RequestLimits()
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")


class ConfigError(ValueError):
    """A setting's value is invalid; the message names the setting and where it came from."""


def _http(default: Any, help: str, minimum: float) -> Any:
    return setting(default, help, group="http", minimum=minimum)


def _access(help: str, shown: str) -> Any:
    return setting("", help, group="access", shown=shown)


@dataclass(frozen=True, slots=True)
class ServeConfig(Settings):
    """Everything ``wshub serve`` can be told: the hub's :class:`Settings` and the server's
    own. Field names are the TOML keys; the flag is the name with ``-`` for ``_``, the
    variable ``WSHUB_`` plus the name in capitals."""

    host: str = setting("127.0.0.1", "Address to listen on.", group="node")
    port: int = setting(8000, "Port to listen on.", group="node", minimum=0)
    broker: str = setting(
        "memory://",
        "Broker URL: memory:// (one process) or redis://[:PASSWORD@]HOST:PORT/DB (rediss:// for "
        "TLS) to share channels, presence and history between processes and machines; "
        "redis+cluster://HOST:PORT[,HOST:PORT...] for a Redis Cluster.",
        group="node",
    )
    workers: int = setting(
        1,
        "Worker processes on one port; more than 1 needs a shared broker.",
        group="node",
        minimum=1,
    )
    request_timeout: float = _http(
        _R.timeout,
        "Seconds for an HTTP request (its head and body) to arrive complete; a slower one "
        "gets 408, a socket that sent nothing is closed.",
        minimum=0.1,
    )
    max_request_line: int = _http(
        _R.max_line,
        "Bytes in an HTTP request line (more: 414) and in any one header line (more: 431).",
        minimum=256,
    )
    max_header_bytes: int = _http(
        _R.max_head, "Bytes of an HTTP request's line and headers together; more: 431.", minimum=256
    )
    max_headers: int = _http(_R.max_headers, "Headers in one HTTP request; more: 431.", minimum=1)
    max_pending_requests: int = _http(
        _R.max_pending,
        "Sockets that have not sent a complete request head (at most half the file-descriptor "
        "limit); beyond it the oldest is closed.",
        minimum=1,
    )
    proxy_headers: bool = setting(
        True,
        "Take the client's address and scheme from X-Forwarded-For and X-Forwarded-Proto "
        "when the peer is one of --forwarded-allow-ips (uvicorn's rule, on every path).",
        group="http",
    )
    forwarded_allow_ips: str = setting(
        "127.0.0.1,::1",
        "Comma-separated addresses and networks (10.0.0.0/8) of the proxies trusted with "
        "X-Forwarded-For; '*' trusts any peer.",
        group="http",
    )
    drain_seconds: float = setting(
        10,
        "On SIGTERM/SIGINT, seconds over which clients are closed with 1001, in batches, so "
        "they do not all reconnect at once (0: all at once). A second signal exits at once.",
        group="stop",
        minimum=0,
    )
    shutdown_grace: float = setting(
        15,
        "With --workers: seconds past --drain-seconds a worker has to exit after the signal; "
        "one still running then is killed (SIGKILL) and the supervisor exits 1.",
        group="stop",
        minimum=0,
    )
    jwt_secret: str = _access(
        "HS256 secret (at least 32 bytes): clients need a JWT.", "none: open mode"
    )
    jwt_public_key: str = _access(
        "PEM public key file (RSA: RS256, EC P-256: ES256): clients need a JWT.",
        "none: open mode",
    )
    allowed_origins: str = _access(
        "Comma-separated origins allowed to connect; any other Origin gets 403.", "any origin"
    )
    api_key: str = _access(
        "Key for the HTTP API (/api) and the dashboard's data (/admin/stats), sent as "
        "'Authorization: apikey KEY'.",
        "none: API off",
    )
    log_level: str = setting(
        "info", "debug, info, warning or error.", group="logs", choices=LOG_LEVELS
    )
    log_format: str = setting(
        "text",
        "text (readable) or json (one JSON object per line).",
        group="logs",
        choices=LOG_FORMATS,
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
        """The hub's own settings, without the server's."""
        return Settings(**{f.name: getattr(self, f.name) for f in fields(Settings)})


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of the table: a :class:`ServeConfig` field with its type and help."""

    name: str
    type: type
    default: Any
    help: str
    group: str
    choices: tuple[str, ...]
    minimum: float | None
    shown: str | None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "WSHUB_" + self.name.upper()

    @property
    def secret(self) -> bool:
        return is_secret(self.name)


@functools.cache
def settings_table() -> tuple[Setting, ...]:
    """Every setting, group by group (:data:`~wshub.model.config.GROUPS`), then as declared."""
    hints = typing.get_type_hints(ServeConfig)
    declared = [f for f in fields(ServeConfig) if "help" in f.metadata]
    declared.sort(key=lambda f: GROUPS.index(f.metadata["group"]))
    return tuple(Setting(f.name, hints[f.name], f.default, **f.metadata) for f in declared)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a value came from: ``flag``, ``env``, ``file`` or ``default``, and which one."""

    kind: str
    where: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.where}" if self.where else self.kind


def read_toml(path: Path) -> dict[str, Any]:
    """The settings in a TOML file: top-level keys, ``_`` or ``-`` alike; unknown keys fail,
    and so does a value of the wrong type (TOML has types: ``port = "80"`` is a string)."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config: file {path} not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config: cannot read {path}: {exc}") from None
    table = {s.name: s for s in settings_table()}
    values = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in table:
            raise ConfigError(f"config: unknown setting {key!r} in {path}")
        values[name] = _typed(table[name], value, Origin("file", str(path)))
    return values


def resolve(
    given: dict[str, tuple[Any, Origin]],
    file_values: dict[str, Any] | None = None,
    file_name: str = "",
) -> tuple[ServeConfig, dict[str, Origin]]:
    """The effective configuration and each value's origin.

    ``given`` holds values with their origins: from the CLI, every setting's winner (click
    applies the precedence); for a setting missing from it, the file's value wins over the
    default. Every value is type-checked and range-checked here, with an error naming the
    setting and its origin.
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


def _invalid(s: Setting, value: Any, origin: Origin, problem: str) -> ConfigError:
    return ConfigError(f"{s.name} {problem}, got {_shown(s, value)} (from {origin})")


def _checked(s: Setting, value: Any, origin: Origin) -> Any:
    value = _typed(s, value, origin)
    if s.type is str and is_mask(s, value):
        # What `wshub config` prints in place of a secret: never a usable value.
        raise ConfigError(
            f"{s.name} holds {MASK!r}, the mask `wshub config` prints in place of a secret "
            f"(from {origin}): give the real value, e.g. in {s.env}"
        )
    if s.choices and str(value).lower() not in s.choices:
        raise _invalid(s, value, origin, f"must be one of {', '.join(s.choices)}")
    if s.choices:
        value = str(value).lower()
    if s.minimum is not None and value < s.minimum:
        raise _invalid(s, value, origin, f"must be at least {s.minimum:g}")
    return value


def _typed(s: Setting, value: Any, origin: Origin) -> Any:
    """The value if it has the setting's type (an int passes for a float, as that float)."""
    if s.type is bool:
        if not isinstance(value, bool):
            raise _invalid(s, value, origin, "must be true or false")
    elif s.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _invalid(s, value, origin, "must be a whole number")
    elif s.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(s, value, origin, "must be a number")
        value = float(value)
    elif s.type is str and not isinstance(value, str):
        raise _invalid(s, value, origin, "must be a string")
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
