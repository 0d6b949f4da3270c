"""The memory broker forgets idempotency keys once their TTL is over, and only then: a retry
within the TTL is the same publication, a retry after it a new one (wshub.brokers.memory)."""

from __future__ import annotations

import time

from wshub.brokers.memory import MemoryBroker


async def test_a_sweep_forgets_expired_idempotency_keys_and_keeps_live_ones() -> None:
    broker = MemoryBroker(idempotency_ttl=10)
    first = await broker.publish("c", b"1", "a", idempotency_key="k1")
    t = time.monotonic()
    while time.monotonic() == t:  # k2 is set strictly after t, k1 at or before it
        pass
    second = await broker.publish("c", b"2", "a", idempotency_key="k2")
    broker.sweep(t + 5)  # neither is 10 s old yet: both retries are the same publication
    assert (await broker.publish("c", b"1", "a", idempotency_key="k1")).offset == first.offset
    assert (await broker.publish("c", b"2", "a", idempotency_key="k2")).offset == second.offset
    broker.sweep(t + 10)  # k1's 10 s are over, k2's not
    assert (await broker.publish("c", b"2", "a", idempotency_key="k2")).offset == second.offset
    retried = await broker.publish("c", b"1", "a", idempotency_key="k1")
    assert retried.offset == second.offset + 1  # a new publication
