"""wshub: a real-time messaging hub for Python, on FastAPI.

Channels, direct messages, presence, history with resume, limits that refuse cleanly, and
brokers that take it from one process to many machines.
"""

from __future__ import annotations

__version__ = "0.1.0"

from wshub.config import Settings
from wshub.hooks import BadRequest, Forbidden
from wshub.hub import Hub
from wshub.permissions import Permissions

__all__ = ["BadRequest", "Forbidden", "Hub", "Permissions", "Settings", "__version__"]
