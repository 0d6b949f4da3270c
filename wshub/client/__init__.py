"""wshub's asyncio client (see :mod:`wshub.client.core`)."""

from wshub.client.channels import Subscription
from wshub.client.core import Client
from wshub.client.frames import (
    ConnectionLost,
    Direct,
    Gap,
    MemberEvent,
    Message,
    Refused,
    ServerError,
    Stopped,
    ws_url,
)
from wshub.client.link import State, TokenProvider
from wshub.client.policy import Action, Backoff, after_close, after_refusal

__all__ = [
    "Action",
    "Backoff",
    "Client",
    "ConnectionLost",
    "Direct",
    "Gap",
    "MemberEvent",
    "Message",
    "Refused",
    "ServerError",
    "State",
    "Stopped",
    "Subscription",
    "TokenProvider",
    "after_close",
    "after_refusal",
    "ws_url",
]
