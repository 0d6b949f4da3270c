"""wshub: a real-time messaging hub for Python, on FastAPI.

Channels, direct messages, presence, history with resume, limits that refuse cleanly, and
brokers that take it from one process to many machines.
"""

from __future__ import annotations

__version__ = "0.1.0"

from wshub.config import Settings
from wshub.hub import Hub

__all__ = ["Hub", "Settings", "__version__"]
