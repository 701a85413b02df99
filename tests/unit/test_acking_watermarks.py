"""`atb_runtime.acking.Watermarks`: the offset committed is that of the first record whose work is not done."""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from atb_runtime.acking import Watermarks

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


def _due(marks: Watermarks, partitions: list[TopicPartition] | None = None) -> dict[TopicPartition, int]:
    """What is due, committed at once (as a commit that succeeds)."""
    due = marks.due(partitions)
    marks.committed(due)
    return due


async def test_the_watermark_stops_at_the_first_unfinished_work_and_moves_when_it_finishes() -> None:
    loop = asyncio.get_running_loop()
    marks = Watermarks()
    first, second = loop.create_future(), loop.create_future()
    marks.seen(A, 10, None)  # nothing to do
    marks.seen(A, 11, first)
    marks.seen(A, 12, None)
    marks.seen(A, 13, second)
    assert _due(marks) == {A: 11}
    assert marks.pending == [first, second]

    second.set_result("delivered")  # finished out of order: the watermark waits for the older one
    assert _due(marks) == {}
    first.set_result("failed")  # given up for good counts as done
    assert _due(marks) == {A: 14}
    assert marks.pending == []
    assert _due(marks) == {}


async def test_partitions_move_on_their_own_and_a_revoked_one_is_forgotten() -> None:
    loop = asyncio.get_running_loop()
    marks = Watermarks()
    stuck = loop.create_future()
    marks.seen(A, 0, stuck)
    marks.seen(B, 5, None)
    assert _due(marks) == {B: 6}
    assert _due(marks, [A]) == {}

    assert marks.forget([A]) == [stuck]  # revoked: the new owner reads from offset 0 again
    assert marks.pending == []
    stuck.set_result("delivered")
    assert _due(marks) == {}
    marks.seen(A, 0, None)  # assigned back, read again from the committed offset
    assert _due(marks) == {A: 1}


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
    assert _due(marks) == {A: 4}
    assert failed.exception() is not None


async def test_a_failed_commit_stays_due_and_a_revocation_commits_only_its_partitions() -> None:
    marks = Watermarks()
    marks.seen(A, 0, None)
    marks.seen(B, 0, None)
    assert marks.due() == {A: 1, B: 1}  # not committed: the commit failed
    marks.seen(A, 1, None)
    assert marks.due() == {A: 2, B: 1}  # still due, with what was done since
    assert marks.due([B]) == {B: 1}
    marks.committed({B: 1})
    assert marks.due() == {A: 2}
