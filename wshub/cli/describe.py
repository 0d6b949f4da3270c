"""``wshub config``: the effective configuration as TOML, each value with its origin, secrets
masked."""

from __future__ import annotations

import json
from typing import Any

from wshub.cli.options import Origin, ServeConfig, settings_table
from wshub.redaction import MASK, is_secret, redact_url

__all__ = ["describe", "masked"]


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
    error naming the setting (:func:`~wshub.cli.options.is_mask`): a config that ran with
    ``***`` as the API key, or with the JWT secret left out (open mode), would be a working
    server with wrong secrets.
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
