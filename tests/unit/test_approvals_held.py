"""approvals.domain.held: the states one instance holds, and the indexes the batch and the tick use.

The indexes must answer what a scan of every state held would: the open requests per tier,
the states a deadline can act on, and the closed states old enough to forget (never one too
young, and none left behind, whatever order the states were put in).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from approvals.domain.held import HeldStates
from contracts import ApprovalStateChanged, Tier
from contracts.events import RequirementsRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Status = Literal["held", "open", "closed"]


def _state(request_id: str, status: Status, tier: Tier | None, at: datetime) -> ApprovalStateChanged:
    requirements = (
        None
        if tier is None
        else RequirementsRecord(
            tier=tier,
            approvals=1,
            ticket_required=False,
            eligible_groups=("manager",),
            pending_seconds=3600,
            poa_ttl_seconds=300,
            policy_version="test-1",
        )
    )
    return ApprovalStateChanged(
        request_id=request_id,
        status=status,
        outcome="quorum_reached" if status == "closed" else None,
        requirements=requirements,
        updated_at=at,
    )


def test_the_pending_count_follows_each_request_from_open_to_closed_to_forgotten() -> None:
    held = HeldStates()
    held.put("a", _state("a", "open", Tier.MEDIUM, T0))
    held.put("b", _state("b", "open", Tier.MEDIUM, T0))
    held.put("c", _state("c", "open", Tier.HIGH, T0))
    held.put("d", _state("d", "held", None, T0))
    assert [held.pending(t.value) for t in Tier] == [0, 2, 1, 0]
    held.put("a", _state("a", "open", Tier.MEDIUM, T0 + timedelta(seconds=1)))  # a vote: still open
    assert held.pending("medium") == 2
    held.put("a", _state("a", "closed", Tier.MEDIUM, T0 + timedelta(seconds=2)))
    assert held.pending("medium") == 1
    held.pop("b")
    held.pop("b")
    assert held.pending("medium") == 0
    held.clear()
    assert held.pending("high") == 0
    assert len(held) == 0


def test_the_tick_sees_only_the_states_not_closed_in_the_order_first_held() -> None:
    held = HeldStates()
    held.put("held", _state("held", "held", None, T0))
    held.put("open", _state("open", "open", Tier.HIGH, T0))
    held.put("done", _state("done", "closed", Tier.LOW, T0))
    assert [r for r, _ in held.active()] == ["held", "open"]
    held.put("held", _state("held", "open", Tier.MEDIUM, T0))  # its request arrived: it keeps its place
    assert [r for r, _ in held.active()] == ["held", "open"]
    held.put("open", _state("open", "closed", Tier.HIGH, T0))
    assert [(r, s.status) for r, s in held.active()] == [("held", "open")]
    assert len(held) == 3


def test_states_put_out_of_time_order_are_forgotten_on_time() -> None:
    """A restore puts one partition after another, a rewind puts states back: neither delays forgetting."""
    held = HeldStates()
    for i in range(100):  # partition 0: the last two hours
        held.put(f"p0-{i}", _state(f"p0-{i}", "closed", Tier.LOW, T0 + timedelta(minutes=i)))
    for i in range(100):  # partition 1: the same two hours, put after all of partition 0
        held.put(f"p1-{i}", _state(f"p1-{i}", "closed", Tier.LOW, T0 + timedelta(minutes=i)))
    due = held.closed_before(T0 + timedelta(minutes=10))
    assert sorted(due) == sorted([f"p0-{i}" for i in range(10)] + [f"p1-{i}" for i in range(10)])
    assert due[:2] == ["p0-0", "p1-0"]  # oldest first


def test_a_closed_state_is_forgotten_once_only_after_the_cutoff_and_by_its_latest_close() -> None:
    held = HeldStates()
    held.put("a", _state("a", "closed", Tier.LOW, T0))
    held.put("b", _state("b", "closed", Tier.LOW, T0 + timedelta(seconds=10)))
    assert held.closed_before(T0) == []  # not strictly older
    held.put("a", _state("a", "closed", Tier.LOW, T0 + timedelta(seconds=20)))  # changed again while closed
    assert held.closed_before(T0 + timedelta(seconds=15)) == ["b"]  # a's first entry is stale
    held.pop("b")
    assert held.closed_before(T0 + timedelta(seconds=15)) == []
    assert held.closed_before(T0 + timedelta(seconds=21)) == ["a"]
    assert held.closed_before(T0 + timedelta(hours=1)) == []  # taken once
    assert "a" in held  # forgetting is the caller's `pop`


def test_a_closed_state_put_back_by_a_rewind_is_handed_out_once() -> None:
    held = HeldStates()
    held.put("a", _state("a", "closed", Tier.LOW, T0))
    held.pop("a")  # a rewind forgets what the failed transaction decided...
    held.put("a", _state("a", "closed", Tier.LOW, T0))  # ...and reloads the committed state: two entries
    assert held.closed_before(T0 + timedelta(seconds=1)) == ["a"]


def test_a_forgotten_and_reloaded_request_is_not_taken_by_its_old_entry() -> None:
    held = HeldStates()
    held.put("a", _state("a", "closed", Tier.LOW, T0))
    held.pop("a")
    held.put("a", _state("a", "open", Tier.LOW, T0 + timedelta(seconds=5)))
    assert held.closed_before(T0 + timedelta(seconds=60)) == []
    assert held.pending("low") == 1


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "pop", "reput", "forget"]),
        st.sampled_from(["r1", "r2", "r3", "r4"]),
        st.sampled_from(["held", "open", "closed"]),
        st.sampled_from([None, Tier.LOW, Tier.MEDIUM, Tier.CRITICAL]),
        st.integers(0, 30),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_the_indexes_answer_what_a_scan_of_every_state_would(
    ops: list[tuple[str, str, Status, Tier | None, int]],
) -> None:
    held, model = HeldStates(), dict[str, ApprovalStateChanged]()
    for op, request_id, status, tier, seconds in ops:
        at = T0 + timedelta(seconds=seconds)
        if op == "put":
            state = _state(request_id, status, tier, at)
            held.put(request_id, state)
            model[request_id] = state
        elif op == "pop":
            held.pop(request_id)
            model.pop(request_id, None)
        elif op == "reput":  # a rewind: the state held is popped and put back as it was
            if request_id in model:
                held.pop(request_id)
                held.put(request_id, model[request_id])
        else:
            handed = held.closed_before(at)
            # Neither early nor late: exactly the states closed before the cutoff, each once.
            assert len(handed) == len(set(handed))
            assert sorted(handed) == sorted(r for r, s in model.items() if s.status == "closed" and s.updated_at < at)
            for forgotten in handed:
                held.pop(forgotten)
                del model[forgotten]
        for t in Tier:
            scan = sum(1 for s in model.values() if s.status == "open" and s.requirements and s.requirements.tier == t)
            assert held.pending(t.value) == scan
        assert {r for r, _ in held.active()} == {r for r, s in model.items() if s.status != "closed"}
        assert len(held) == len(model)
    # Nothing lost: once the cutoff passes every close, every closed state is handed out.
    assert set(held.closed_before(T0 + timedelta(days=1))) == {r for r, s in model.items() if s.status == "closed"}
