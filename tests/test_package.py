"""The package's front: what ``import wshub`` offers, what it costs, and where the version lives."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

import wshub

HEAVY = ("fastapi", "starlette", "uvicorn", "prometheus_client", "redis", "wshub.core", "wshub.app")


def _loaded_after(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


def test_every_name_in_all_resolves() -> None:
    for name in wshub.__all__:
        assert getattr(wshub, name) is not None, name
    assert sorted(dir(wshub)) == sorted(wshub.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = wshub.Nope


@pytest.mark.parametrize(
    "statement", ["import wshub", "import wshub.protocol", "import wshub.client"]
)
def test_importing_the_protocol_or_the_client_does_not_load_the_hub(statement: str) -> None:
    loaded = _loaded_after(statement)
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY or m.startswith(HEAVY)]
    assert heavy == []


def test_the_hub_loads_on_first_use() -> None:
    loaded = _loaded_after("import wshub\nwshub.Hub")
    assert "wshub.core.hub" in loaded


def test_one_version_source() -> None:
    assert importlib.metadata.version("wshub") == wshub.__version__
