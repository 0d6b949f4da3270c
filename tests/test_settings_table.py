"""The one table: the hub's Settings and the server's own fields make ServeConfig, and click's
default_map puts the file under flags and variables."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from typer.testing import CliRunner

from wshub.cli.main import app
from wshub.cli.options import Origin, ServeConfig, resolve, settings_table
from wshub.model.config import GROUPS, Settings


def config_lines(*args: str, env: dict[str, str] | None = None) -> dict[str, str]:
    result = CliRunner().invoke(app, ["config", *args], env=env or {})
    assert result.exit_code == 0, result.output
    return {line.split(" = ")[0]: line for line in result.output.splitlines() if " = " in line}


def test_every_hub_setting_with_help_is_a_flag_and_reaches_the_hub_by_name() -> None:
    table = {s.name: s for s in settings_table()}
    for f in fields(Settings):
        assert (f.name in table) == ("help" in f.metadata), f.name
    assert {"close_timeout", "retry_after", "server_name"}.isdisjoint(table)
    hub_names = [f.name for f in fields(Settings) if f.name in table]
    given = {
        name: (False if table[name].type is bool else 7, Origin("flag", table[name].flag))
        for name in hub_names
    }
    config, _ = resolve(given)
    settings = config.settings()
    assert type(settings) is Settings
    for name in hub_names:
        assert getattr(settings, name) == given[name][0], name
    assert {f.name for f in fields(ServeConfig)} - {f.name for f in fields(Settings)} == (
        set(table) - set(hub_names)
    )


def test_the_table_lists_the_settings_group_by_group() -> None:
    order = [GROUPS.index(s.group) for s in settings_table()]
    assert order == sorted(order)
    assert len(set(order)) == len(GROUPS)  # every group holds a setting


def test_a_boolean_from_the_file_yields_to_its_flag(tmp_path: Path) -> None:
    path = tmp_path / "wshub.toml"
    path.write_text("fast_path = false\n")
    assert config_lines("--config", str(path))["fast_path"].startswith("fast_path = false ")
    flag = config_lines("--config", str(path), "--fast-path")["fast_path"]
    assert flag.startswith("fast_path = true ") and flag.endswith("# flag --fast-path")
    env = config_lines(env={"WSHUB_CONFIG": str(path), "WSHUB_FAST_PATH": "true"})["fast_path"]
    assert env.endswith("# env WSHUB_FAST_PATH")


def test_a_value_of_the_wrong_type_in_the_file_fails_though_a_variable_wins(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wshub.toml"
    path.write_text('queue_size = "64"\n')
    result = CliRunner().invoke(
        app, ["config", "--config", str(path)], env={"WSHUB_QUEUE_SIZE": "32"}
    )
    assert result.exit_code == 2
    assert f"queue_size must be a whole number, got '64' (from file {path})" in " ".join(
        result.output.replace("│", " ").split()
    )
