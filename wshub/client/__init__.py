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
    Unsubscribed,
    ws_url,
)
from wshub.client.link import State, TokenProvider
from wshub.client.policy import Action, Backoff, after_close, after_refusal
from wshub.client.tokens import SubscriptionTokenFunction, TokenFunction, expiry_of

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
    "SubscriptionTokenFunction",
    "TokenFunction",
    "TokenProvider",
    "Unsubscribed",
    "after_close",
    "after_refusal",
    "expiry_of",
    "ws_url",
]
