"""The options of ``wshub serve`` and ``wshub config``, one per setting of the table
(:mod:`wshub.cli.options`), with click applying the precedence.

Each setting is a typer option with its ``WSHUB_<NAME>`` variable. ``--config`` is eager, so
click reads it before the others, and its file becomes the command's ``default_map``. Click
then takes each value from the flag, else the variable, else the file, else the default, and
tells which (``Context.get_parameter_source``): the origin ``wshub config`` prints.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from wshub.cli.options import ConfigError, Origin, ServeConfig, read_toml, resolve, settings_table

__all__ = ["effective", "serve_options"]

_CONFIG_HELP = "A TOML file of settings (keys as in `wshub config`); flags and variables win."


class _SettingError(typer.BadParameter):
    """An invalid setting; the message names it and its origin, so click's hint naming the
    option being read (``--config``) would only mislead."""

    def format_message(self) -> str:
        return f"Invalid value: {self.message}"


def _read_file(ctx: typer.Context, path: Path | None) -> Path | None:
    """``--config``: the file's settings become the defaults, under flags and variables."""
    if path is not None:
        try:
            ctx.default_map = read_toml(path)
        except ConfigError as exc:
            raise _SettingError(str(exc)) from None
    return path


def serve_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command(ctx, config, **values)`` one typer option per setting of the table.

    typer makes its options from a function's parameters, so this gives the function the
    parameters the table lists.
    """
    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(
                None,
                "--config",
                help=_CONFIG_HELP,
                envvar="WSHUB_CONFIG",
                is_eager=True,
                callback=_read_file,
            ),
            annotation=Path | None,
        ),
    ]
    for s in settings_table():
        option = typer.Option(
            s.default,
            f"{s.flag}/--no-{s.flag[2:]}" if s.type is bool else s.flag,
            help=s.help,
            # Named here, not derived by click's auto_envvar_prefix: only a named variable
            # is cited in click's own errors ("--port (env var: 'WSHUB_PORT')").
            envvar=s.env,
            show_default=s.shown if s.shown is not None else not s.secret,
        )
        params.append(
            inspect.Parameter(
                s.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=s.type
            )
        )
    command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    return command


def effective(
    ctx: typer.Context, config: Path | None, values: dict[str, Any]
) -> tuple[ServeConfig, dict[str, Origin]]:
    """The configuration click found, each value with its origin; BadParameter if invalid."""
    given: dict[str, tuple[Any, Origin]] = {}
    for s in settings_table():
        # typer may carry its own copy of click: compare the source by name.
        source = getattr(ctx.get_parameter_source(s.name), "name", "")
        origin = {
            "COMMANDLINE": Origin("flag", s.flag),
            "ENVIRONMENT": Origin("env", s.env),
            "DEFAULT_MAP": Origin("file", str(config)),
        }.get(source, Origin("default"))
        given[s.name] = (values[s.name], origin)
    try:
        return resolve(given)
    except ConfigError as exc:
        raise _SettingError(str(exc)) from None
