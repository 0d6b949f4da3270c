"""Configuration: one table of settings, precedence flag > env > file > default, `wshub config`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import ServerFactory
from tests.support import connect, serve_refused
from wshub.cli.main import app
from wshub.cli.options import ConfigError, Origin, ServeConfig, read_toml, resolve, settings_table


def test_every_setting_has_a_flag_a_variable_and_help() -> None:
    table = settings_table()
    assert [s.name for s in table][:4] == ["host", "port", "broker", "workers"]
    for s in table:
        assert s.flag == "--" + s.name.replace("_", "-")
        assert s.env == "WSHUB_" + s.name.upper()
        assert s.help
    assert {s.name for s in table if s.secret} == {"api_key", "jwt_secret"}


def test_precedence_flag_then_env_then_file_then_default() -> None:
    given = {
        "port": (9001, Origin("flag", "--port")),
        "queue_size": (7, Origin("env", "WSHUB_QUEUE_SIZE")),
    }
    file_values = {"port": 1, "queue_size": 2, "history_size": 3}
    config, origins = resolve(given, file_values, "wshub.toml")
    assert (config.port, config.queue_size, config.history_size) == (9001, 7, 3)
    assert config.max_channels == ServeConfig().max_channels
    assert str(origins["port"]) == "flag --port"
    assert str(origins["queue_size"]) == "env WSHUB_QUEUE_SIZE"
    assert str(origins["history_size"]) == "file wshub.toml"
    assert str(origins["max_channels"]) == "default"
    assert config.settings().history_size == 3


@pytest.mark.parametrize(
    ("file_values", "message"),
    [
        ({"history_ttl": "soon"}, "history_ttl must be a number, got 'soon' (from file w.toml)"),
        ({"queue_size": 1.5}, "queue_size must be a whole number"),
        ({"queue_size": True}, "queue_size must be a whole number"),
        ({"queue_size": 0}, "queue_size must be at least 1, got 0 (from file w.toml)"),
        ({"log_format": "xml"}, "log_format must be one of text, json"),
        ({"drain_seconds": -1}, "drain_seconds must be at least 0"),
        ({"broker": "pigeon://x"}, "unknown broker URL"),
        ({"workers": 2}, "needs a shared broker"),
        ({"api_key": 12345}, "api_key must be a string, got *** (from file w.toml)"),
    ],
)
def test_an_invalid_value_names_the_setting_and_its_origin(
    file_values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        resolve({}, file_values, "w.toml")
    assert message in str(err.value)
    assert "12345" not in str(err.value)


def test_toml_keys_take_dashes_or_underscores_and_unknown_keys_fail(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('max-connections = 5\nbroker = "redis://127.0.0.1:6379/0"\n')
    assert read_toml(good) == {"max_connections": 5, "broker": "redis://127.0.0.1:6379/0"}
    typo = tmp_path / "typo.toml"
    typo.write_text("max_conections = 5\n")
    with pytest.raises(ConfigError, match="unknown setting 'max_conections'"):
        read_toml(typo)
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(ConfigError, match="config: cannot read"):
        read_toml(broken)
    with pytest.raises(ConfigError, match="not found"):
        read_toml(tmp_path / "absent.toml")


def test_wshub_config_shows_each_origin_and_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "wshub.toml"
    path.write_text('port = 7000\nqueue_size = 64\nhistory_size = 5\napi_key = "k-file"\n')
    result = CliRunner().invoke(
        app,
        ["config", "--port", "7001", "--broker", "redis://:hunter2@10.0.0.5:6379/0"],
        env={"WSHUB_CONFIG": str(path), "WSHUB_QUEUE_SIZE": "32", "WSHUB_API_KEY": "k-env"},
    )
    assert result.exit_code == 0, result.output
    lines = {line.split(" = ")[0]: line for line in result.output.splitlines() if " = " in line}
    assert lines["port"].split("#")[1].strip() == "flag --port"
    assert lines["port"].startswith("port = 7001 ")
    assert lines["queue_size"].startswith("queue_size = 32 ")
    assert lines["queue_size"].endswith("# env WSHUB_QUEUE_SIZE")
    assert lines["history_size"].endswith(f"# file {path}")
    assert lines["max_channels"].endswith("# default")
    assert '"redis://:***@10.0.0.5:6379/0"' in lines["broker"]
    assert lines["api_key"].startswith('api_key = "***"')
    for secret in ("hunter2", "k-env", "k-file"):
        assert secret not in result.output


def test_an_invalid_variable_fails_at_start_naming_it() -> None:
    proc = serve_refused(WSHUB_LOG_FORMAT="yaml")
    assert "log_format must be one of text, json, got 'yaml' (from env WSHUB_LOG_FORMAT)" in (
        " ".join(proc.stderr.replace("│", " ").split())
    )


async def test_serve_runs_with_the_file_under_the_variables(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "wshub.toml"
    path.write_text("ping_interval = 7\nmax_channels = 1\nhistory_size = 3\n")
    node = make_server("--config", str(path), WSHUB_MAX_CHANNELS="2")
    async with connect(node.url, "filed") as client:
        assert client.welcome["heartbeat"] == 7  # from the file
        await client.join("cfg:a")
        await client.join("cfg:b")  # 2 channels: the variable won over the file's 1
        reply = await client.request({"type": "join", "channel": "cfg:c"})
        assert reply["code"] == "limit"
