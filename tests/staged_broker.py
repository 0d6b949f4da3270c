"""The memory broker with a hand on each call, to produce fault interleavings on purpose.

A test can hold the next call of a broker method (``history``, ``recover``, ``subscribe``,
``presence_add``, ``publish``) until it opens the gate, make its next calls raise, lose, delay
or repeat the pub/sub delivery of chosen offsets, or lose every channel's history as a flushed
Redis does. Everything else is the real :class:`~wshub.brokers.memory.MemoryBroker`, so
offsets, epochs and history are the ones a node really gets.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wshub.brokers import BrokerTimeout
from wshub.brokers.memory import MemoryBroker
from wshub.model.history import Recovery
from wshub.model.publication import Publication

__all__ = ["Gate", "StagedBroker"]


class Gate:
    """One held call: ``reached`` is set once the call waits here; :meth:`open` lets it on."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self._open = asyncio.Event()

    async def wait_reached(self) -> None:
        async with asyncio.timeout(5):
            await self.reached.wait()

    def open(self) -> None:
        self._open.set()

    async def pass_through(self) -> None:
        self.reached.set()
        await self._open.wait()


class _Captured:
    """What the memory broker delivered during one publish."""

    def __init__(self) -> None:
        self.pubs: list[Publication] = []

    def deliver(self, pub: Publication) -> None:
        self.pubs.append(pub)


class StagedBroker(MemoryBroker):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gates: dict[str, list[Gate]] = {}
        self._faults: dict[str, list[BaseException]] = {}
        self.calls: dict[str, int] = {}
        self.lose: set[int] = set()
        """Offsets whose pub/sub delivery is lost (still published, still in history)."""
        self.repeat: set[int] = set()
        """Offsets that pub/sub delivers twice."""
        self.delayed: list[Publication] | None = None
        """While not None, pub/sub deliveries wait here, in order (see :meth:`release`)."""

    # --- the hands on each call ------------------------------------------------------------

    def hold(self, call: str) -> Gate:
        """Hold the next call of ``call`` (after any already held) until the gate opens."""
        gate = Gate()
        self._gates.setdefault(call, []).append(gate)
        return gate

    def fail(self, call: str, *errors: BaseException) -> None:
        """The next calls of ``call`` raise these, one each, in order."""
        self._faults.setdefault(call, []).extend(errors)

    def faults_left(self, call: str) -> int:
        return len(self._faults.get(call, []))

    async def _stage(self, call: str) -> None:
        self.calls[call] = self.calls.get(call, 0) + 1
        gates = self._gates.get(call)
        if gates:
            await gates.pop(0).pass_through()
        faults = self._faults.get(call)
        if faults:
            raise faults.pop(0)

    # --- pub/sub ---------------------------------------------------------------------------

    def delay(self) -> None:
        """From now on, deliveries wait until :meth:`release`."""
        self.delayed = []

    def release(self) -> None:
        """Hand every delayed delivery to the node, in order, as a late pub/sub does."""
        delayed, self.delayed = self.delayed or [], None
        for pub in delayed:
            if self._sink is not None:
                self._sink.deliver(pub)

    def flush(self) -> None:
        """Lose every channel's history and position, as a flushed Redis does."""
        self._logs.clear()

    # --- the broker's calls ----------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        await self._stage("subscribe")
        await super().subscribe(channel)

    async def presence_add(self, channel: str, user: str, session: str, meta: bytes) -> bool:
        await self._stage("presence_add")
        return await super().presence_add(channel, user, session, meta)

    async def recover(self, channel: str, offset: int | None, epoch: str | None) -> Recovery:
        await self._stage("recover")
        return await super().recover(channel, offset, epoch)

    async def history(
        self, channel: str, offset: int | None, epoch: str | None, limit: int
    ) -> tuple[str, list[Publication]]:
        await self._stage("history")
        return await super().history(channel, offset, epoch, limit)

    async def publish(
        self, channel: str, data: bytes, sender: str | None, idempotency_key: str | None = None
    ) -> Publication:
        """Published, delivered (or lost, or delayed), then confirmed: a held or failed
        confirmation comes after the publication, as when Redis ran it but its reply is late.
        A BrokerUnavailable that is not a timeout comes before: nothing was published."""
        faults = self._faults.get("publish")
        if faults and not isinstance(faults[0], BrokerTimeout):
            await self._stage("publish")  # raises: refused, nothing published
        sink, captured = self._sink, _Captured()
        self._sink = captured  # type: ignore[assignment]  # only deliver() is called here
        try:
            pub = await super().publish(channel, data, sender, idempotency_key)
        finally:
            self._sink = sink
        for sent in captured.pubs:  # none when the idempotency key was seen
            if sink is not None and sent.offset not in self.lose:
                if self.delayed is not None:
                    self.delayed.append(sent)
                else:
                    sink.deliver(sent)
                    if sent.offset in self.repeat:
                        sink.deliver(sent)
        await self._stage("publish")
        return pub
