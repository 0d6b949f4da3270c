"""wshub: a real-time messaging hub for Python, on FastAPI.

Channels, direct messages, presence, history with resume, limits that refuse cleanly, and
brokers that take it from one process to many machines.

The names below load on first use, so ``import wshub.protocol`` (or the client) does not pull
in the hub, FastAPI or prometheus_client.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

# The one version source: pyproject.toml reads it from here (tool.setuptools.dynamic).
__version__ = "0.1.0"

if TYPE_CHECKING:
    from wshub.app.hub import Hub
    from wshub.core.channel_rules import InvalidData
    from wshub.core.hooks import BadRequest, Forbidden
    from wshub.core.permissions import Permissions
    from wshub.model.config import Settings

_LAZY = {
    "BadRequest": "wshub.core.hooks",
    "Forbidden": "wshub.core.hooks",
    "Hub": "wshub.app.hub",
    "InvalidData": "wshub.core.channel_rules",
    "Permissions": "wshub.core.permissions",
    "Settings": "wshub.model.config",
}

__all__ = [
    "BadRequest",
    "Forbidden",
    "Hub",
    "InvalidData",
    "Permissions",
    "Settings",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wshub' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
