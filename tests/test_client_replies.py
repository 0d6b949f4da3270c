"""The client's reply bookkeeping on its own: replies by id, the id-less ``too_large``."""

from __future__ import annotations

import json

import pytest

from wshub.client.frames import ConnectionLost
from wshub.client.replies import Replies


async def test_a_reply_goes_to_the_request_with_its_id() -> None:
    replies = Replies()
    with (
        replies.expect({"type": "ping"}) as (first, one),
        replies.expect({"type": "ping"}) as (second, two),
    ):
        first_id, second_id = json.loads(first)["id"], json.loads(second)["id"]
        assert first_id != second_id
        assert replies.answer({"type": "pong", "id": second_id})
        assert two.result() == {"type": "pong", "id": second_id}
        assert not one.done()
        assert not replies.answer({"type": "pong", "id": second_id})  # answered already
    assert not replies.answer({"type": "pong", "id": first_id})  # forgotten after the block


async def test_a_too_large_without_an_id_answers_the_largest_request_waiting() -> None:
    replies = Replies()
    small = {"type": "publish", "channel": "c", "data": "x"}
    large = {"type": "publish", "channel": "c", "data": "x" * 1000}
    with replies.expect(small) as (_, for_small), replies.expect(large) as (_, for_large):
        error = {"type": "error", "code": "too_large", "message": "frame over the limit"}
        assert replies.answer(error)
        assert for_large.result() == error
        assert not for_small.done()
    assert not Replies().answer(error)  # nothing waiting: the link logs it instead


async def test_failing_fails_every_request_waiting() -> None:
    replies = Replies()
    with replies.expect({"type": "ping"}) as (text, future):
        replies.fail(ConnectionLost("connection lost"))
        with pytest.raises(ConnectionLost):
            future.result()
        assert not replies.answer({"type": "pong", "id": json.loads(text)["id"]})
