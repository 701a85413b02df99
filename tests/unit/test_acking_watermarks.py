"""`atb_runtime.acking.Watermarks`: the offset committed is that of the first record whose work is not done."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from atb_runtime.acking import Watermarks

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


async def test_the_watermark_stops_at_the_first_unfinished_work_and_moves_when_it_finishes() -> None:
    loop = asyncio.get_running_loop()
    marks = Watermarks()
    first, second = loop.create_future(), loop.create_future()
    marks.seen(A, 10, None)  # nothing to do
    marks.seen(A, 11, first)
    marks.seen(A, 12, None)
    marks.seen(A, 13, second)
    assert marks.advance() == {A: 11}
    assert marks.pending == [first, second]

    second.set_result("delivered")  # finished out of order: the watermark waits for the older one
    assert marks.advance() == {}
    first.set_result("failed")  # given up for good counts as done
    assert marks.advance() == {A: 14}
    assert marks.pending == []
    assert marks.advance() == {}


async def test_partitions_move_on_their_own_and_a_revoked_one_is_forgotten() -> None:
    loop = asyncio.get_running_loop()
    marks = Watermarks()
    stuck = loop.create_future()
    marks.seen(A, 0, stuck)
    marks.seen(B, 5, None)
    assert marks.advance() == {B: 6}
    assert marks.advance([A]) == {}

    marks.forget([A])  # revoked: the new owner reads from offset 0 again
    assert marks.pending == []
    stuck.set_result("delivered")
    assert marks.advance() == {}
    marks.seen(A, 0, None)  # assigned back, read again from the committed offset
    assert marks.advance() == {A: 1}


async def test_failed_work_is_done_and_cancelled_work_is_not() -> None:
    """A stop cancels the work not done: it must be read again, so nothing is committed past it."""
    loop = asyncio.get_running_loop()
    marks = Watermarks()
    failed, cancelled = loop.create_future(), loop.create_future()
    marks.seen(A, 3, failed)
    marks.seen(A, 4, cancelled)
    marks.seen(A, 5, None)
    failed.set_exception(RuntimeError("receiver gone"))
    cancelled.cancel()
    assert marks.advance() == {A: 4}
    assert failed.exception() is not None
