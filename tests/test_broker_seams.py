"""The brokers sit below the core: loading one loads no hub, no app and no web framework."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ABOVE_BROKERS = ("wshub.core", "wshub.transport", "wshub.app", "wshub.cli", "fastapi", "starlette")


@pytest.mark.parametrize("module", ["wshub.brokers.memory", "wshub.brokers.redis"])
def test_a_broker_loads_nothing_above_it(module: str) -> None:
    code = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    loaded: list[str] = json.loads(out)
    assert module in loaded
    above = [m for m in loaded if m.startswith(ABOVE_BROKERS)]
    assert above == []
