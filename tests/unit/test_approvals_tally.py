"""approvals.domain.tally: "2 of N" distinct eligible people, one deny denies (docs/architecture.md §2.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import pytest

from approvals.domain.directory import Approver, Directory
from approvals.domain.intake import Requirements
from approvals.domain.tally import Ballot, Counted, Refused, TallyResult, tally
from contracts import Tier, VoteChoice
from contracts.reasons import ReasonCode

APPROVE, DENY = VoteChoice.APPROVE, VoteChoice.DENY
DEADLINE = datetime(2024, 1, 15, 10, 5, tzinfo=UTC)
RIGHT = "sha256:" + "a" * 64
WRONG = "sha256:" + "b" * 64
AGENT = "spiffe://atb.local/agent/crm-bot"
ACCOUNTABLE = "EMP-100"
REQUESTER = (AGENT, ACCOUNTABLE)
ELIGIBLE = ("manager", "compliance", "security")
ABOVE_LOW = frozenset({Tier.MEDIUM, Tier.HIGH, Tier.CRITICAL})


def _approver(principal: str, type_: str, ids: tuple[str, ...], tiers: frozenset[Tier] = ABOVE_LOW) -> Approver:
    return Approver(
        principal, type_, frozenset({type_}), tiers, frozenset({f"spiffe://atb.local/user/{principal}", *ids})
    )


DIRECTORY = Directory(
    (
        _approver("alice", "manager", ("slack:UALICE",)),
        _approver("bob", "compliance", ("slack:UBOB",)),
        _approver("carol", "security", ("emp-300",)),
        _approver("dave", "manager", (), frozenset({Tier.MEDIUM})),  # may not approve high or critical
        _approver("erin", "finance", ("slack:UERIN",)),  # not in any eligible group
        _approver("frank", "finance", (), frozenset({Tier.MEDIUM})),  # neither tier nor group
        _approver("pat", "manager", ("emp-100", "slack:UPAT")),  # the accountable party, as an approver
        _approver("robo", "manager", (AGENT,)),  # misconfigured: the agent's own SPIFFE ID
    )
)


def requirements(tier: Tier) -> Requirements:
    approvals = {Tier.LOW: 0, Tier.MEDIUM: 1, Tier.HIGH: 2, Tier.CRITICAL: 2}[tier]
    return Requirements(tier, approvals, tier is Tier.CRITICAL, ELIGIBLE, 300, 120, "test-1")


def vote(
    who: str,
    choice: VoteChoice = APPROVE,
    *,
    digest: str = RIGHT,
    at: float = -60,
    channel: str = "cli",
) -> Ballot:
    """A ballot from `who`; a bare name means that person's SPIFFE ID. `at` is seconds from the deadline."""
    identity = who if ":" in who or "-" in who or not who.isascii() else f"spiffe://atb.local/user/{who}"
    return Ballot(
        vote_id=f"v-{who}-{choice.value}-{at}",
        identity=identity,
        choice=choice,
        digest=digest,
        received_at=DEADLINE + timedelta(seconds=at),
        channel=channel,
        vote_event=f'{{"vote":"{who}"}}',
    )


@dataclass(frozen=True)
class Case:
    name: str
    ballots: tuple[Ballot, ...]
    verified: bool
    counted: tuple[str, ...]
    refused: tuple[str, ...] = ()
    denied_by: str | None = None
    tier: Tier = Tier.HIGH
    requester: tuple[str, ...] = field(default=REQUESTER)


CASES = [
    # --- quorum ----------------------------------------------------------------
    Case("2 of N: two distinct eligible approvers", (vote("alice"), vote("bob")), True, ("alice", "bob")),
    Case("2 of N: one is not enough", (vote("alice"),), False, ("alice",)),
    Case("2 of N: no votes", (), False, ()),
    Case(
        "2 of N: a third approval still counts",
        (vote("alice"), vote("bob"), vote("carol")),
        True,
        ("alice", "bob", "carol"),
    ),
    Case("arrival order is kept", (vote("carol"), vote("alice")), True, ("carol", "alice")),
    Case("medium needs 1", (vote("alice"),), True, ("alice",), tier=Tier.MEDIUM),
    Case("medium with no votes", (), False, (), tier=Tier.MEDIUM),
    Case("critical needs 2", (vote("alice"),), False, ("alice",), tier=Tier.CRITICAL),
    Case("critical with 2", (vote("alice"), vote("carol")), True, ("alice", "carol"), tier=Tier.CRITICAL),
    Case("low needs nobody", (), True, (), tier=Tier.LOW),
    Case("nobody approves low", (vote("alice"),), True, (), ("tier_not_allowed",), tier=Tier.LOW),
    # --- rule 1: the deadline, by received_at ------------------------------------
    Case("late vote refused", (vote("alice"), vote("bob", at=1)), False, ("alice",), ("after_deadline",)),
    Case("a microsecond late", (vote("alice"), vote("bob", at=1e-6)), False, ("alice",), ("after_deadline",)),
    Case("exactly at the deadline counts", (vote("alice"), vote("bob", at=0)), True, ("alice", "bob")),
    # --- rule 2: strangers -------------------------------------------------------
    Case(
        "strangers do not inflate",
        (vote("alice"), vote("mallory"), vote("slack:UNOBODY"), vote("emp-999")),
        False,
        ("alice",),
        ("unknown_approver",) * 3,
    ),
    Case(
        "a near-miss spelling is a stranger",
        (vote("alice"), vote("spiffe://atb.local/user/bob/")),
        False,
        ("alice",),
        ("unknown_approver",),
    ),
    # --- rule 3: the requester, through any alias ----------------------------------
    Case("self-vote by the agent id", (vote("alice"), vote(AGENT)), False, ("alice",), ("self_approval",)),
    Case(
        "self-vote by the agent id, other case",
        (vote("alice"), vote(AGENT.upper())),
        False,
        ("alice",),
        ("self_approval",),
    ),
    Case(
        "self-vote by the accountable party id", (vote("alice"), vote("emp-100")), False, ("alice",), ("self_approval",)
    ),
    Case(
        "self-vote by the accountable party, fullwidth",
        (vote("alice"), vote("ＥＭＰ－１００")),
        False,
        ("alice",),
        ("self_approval",),
    ),
    Case(
        "self-vote by an alias of the accountable party",
        (vote("alice"), vote("pat")),
        False,
        ("alice",),
        ("self_approval",),
    ),
    Case(
        "self-vote by the accountable party's chat id",
        (vote("alice"), vote("slack:UPAT")),
        False,
        ("alice",),
        ("self_approval",),
    ),
    Case(
        "requester named by principal",
        (vote("alice"), vote("slack:UBOB")),
        False,
        ("alice",),
        ("self_approval",),
        requester=(AGENT, "Bob"),
    ),
    Case(
        "requester named by SPIFFE ID, votes by HR id",
        (vote("carol"), vote("emp-300")),
        False,
        (),
        ("self_approval", "self_approval"),
        requester=(AGENT, "spiffe://atb.local/user/carol"),
    ),
    Case(
        "pat may approve someone else's request",
        (vote("alice"), vote("pat")),
        True,
        ("alice", "pat"),
        requester=(AGENT, "emp-200"),
    ),
    Case(
        "the requester's deny is refused",
        (vote("alice"), vote("bob"), vote("slack:UPAT", DENY)),
        True,
        ("alice", "bob"),
        ("self_approval",),
    ),
    # --- rule 4: tier ------------------------------------------------------------
    Case("tier not allowed", (vote("alice"), vote("dave")), False, ("alice",), ("tier_not_allowed",)),
    Case("the same approver may approve medium", (vote("dave"),), True, ("dave",), tier=Tier.MEDIUM),
    # --- rule 5: groups ----------------------------------------------------------
    Case(
        "ineligible approvers do not inflate",
        (vote("alice"), vote("erin"), vote("slack:UERIN")),
        False,
        ("alice",),
        ("not_eligible",) * 2,
    ),
    Case(
        "deny by an ineligible approver does not deny",
        (vote("alice"), vote("bob"), vote("erin", DENY)),
        True,
        ("alice", "bob"),
        ("not_eligible",),
    ),
    # --- rule 6: digest ----------------------------------------------------------
    Case("wrong digest refused", (vote("alice"), vote("bob", digest=WRONG)), False, ("alice",), ("digest_mismatch",)),
    Case(
        "a deny for another request does not deny",
        (vote("alice"), vote("bob"), vote("carol", DENY, digest=WRONG)),
        True,
        ("alice", "bob"),
        ("digest_mismatch",),
    ),
    Case(
        "wrong digest then right digest",
        (vote("bob", digest=WRONG), vote("alice"), vote("bob")),
        True,
        ("alice", "bob"),
        ("digest_mismatch",),
    ),
    # --- rule 7: deny ------------------------------------------------------------
    Case(
        "deny wins after approvals",
        (vote("alice"), vote("bob"), vote("carol", DENY)),
        False,
        ("alice", "bob"),
        denied_by="carol",
    ),
    Case(
        "deny before approvals",
        (vote("carol", DENY), vote("alice"), vote("bob")),
        False,
        ("alice", "bob"),
        denied_by="carol",
    ),
    Case(
        "deny by someone who approved earlier",
        (vote("alice"), vote("bob"), vote("alice", DENY)),
        False,
        ("alice", "bob"),
        denied_by="alice",
    ),
    Case(
        "deny through another channel",
        (vote("alice"), vote("bob"), vote("slack:UBOB", DENY)),
        False,
        ("alice", "bob"),
        denied_by="bob",
    ),
    Case(
        "second deny is a duplicate",
        (vote("carol", DENY), vote("alice", DENY)),
        False,
        (),
        ("duplicate_deny",),
        denied_by="carol",
    ),
    Case("a deny on medium", (vote("alice", DENY), vote("bob")), False, ("bob",), denied_by="alice", tier=Tier.MEDIUM),
    Case(
        "a late deny does not deny",
        (vote("alice"), vote("bob"), vote("carol", DENY, at=30)),
        True,
        ("alice", "bob"),
        ("after_deadline",),
    ),
    Case(
        "a stranger's deny does not deny",
        (vote("alice"), vote("bob"), vote("mallory", DENY)),
        True,
        ("alice", "bob"),
        ("unknown_approver",),
    ),
    Case(
        "a deny from the wrong tier does not deny",
        (vote("alice"), vote("bob"), vote("dave", DENY)),
        True,
        ("alice", "bob"),
        ("tier_not_allowed",),
    ),
    # --- rule 8: one person counts once -------------------------------------------
    Case(
        "duplicate through two channels",
        (vote("alice"), vote("slack:UALICE", channel="slack")),
        False,
        ("alice",),
        ("duplicate",),
    ),
    Case("the same vote delivered twice", (vote("alice"), vote("alice")), False, ("alice",), ("duplicate",)),
    Case(
        "unicode-variant identity counts once",
        (
            vote("SPIFFE://ATB.LOCAL/USER/ALICE"),
            vote("ｓｌａｃｋ:ｕａｌｉｃｅ"),
            vote("spiffe://atb.local/user/alice "),
        ),
        False,
        ("alice",),
        ("duplicate", "duplicate"),
    ),
    Case("principal and HR id of one person", (vote("carol"), vote("EMP-300")), False, ("carol",), ("duplicate",)),
    Case(
        "duplicate, then a second person",
        (vote("alice"), vote("slack:UALICE"), vote("bob")),
        True,
        ("alice", "bob"),
        ("duplicate",),
    ),
    # --- the first failing rule names the refusal -----------------------------------
    Case("late stranger", (vote("mallory", at=5),), False, (), ("after_deadline",)),
    Case("late requester", (vote(AGENT, at=5),), False, (), ("after_deadline",)),
    Case("stranger with wrong digest", (vote("mallory", digest=WRONG),), False, (), ("unknown_approver",)),
    Case("self before tier and group", (vote("frank"),), False, (), ("self_approval",), requester=(AGENT, "frank")),
    Case("tier before group", (vote("frank"),), False, (), ("tier_not_allowed",)),
    Case("group before digest", (vote("erin", digest=WRONG),), False, (), ("not_eligible",)),
    Case(
        "digest before duplicate",
        (vote("alice"), vote("slack:UALICE", digest=WRONG)),
        False,
        ("alice",),
        ("digest_mismatch",),
    ),
    Case("late duplicate", (vote("alice"), vote("slack:UALICE", at=1)), False, ("alice",), ("after_deadline",)),
    # --- combinations: nothing inflates "2 of N" --------------------------------------
    Case(
        "everyone but one eligible person",
        (
            vote("alice"),
            vote("slack:UALICE"),
            vote("mallory"),
            vote(AGENT),
            vote("emp-100"),
            vote("dave"),
            vote("erin"),
            vote("bob", digest=WRONG),
            vote("bob", at=1),
        ),
        False,
        ("alice",),
        (
            "duplicate",
            "unknown_approver",
            "self_approval",
            "self_approval",
            "tier_not_allowed",
            "not_eligible",
            "digest_mismatch",
            "after_deadline",
        ),
    ),
    Case(
        "threshold reached exactly among noise",
        (vote("mallory"), vote("alice"), vote("erin"), vote("slack:UALICE"), vote("slack:UBOB", channel="slack")),
        True,
        ("alice", "bob"),
        ("unknown_approver", "not_eligible", "duplicate"),
    ),
]


def run(case: Case) -> TallyResult:
    return tally(
        case.ballots,
        requirements=requirements(case.tier),
        digest=RIGHT,
        requester_ids=case.requester,
        directory=DIRECTORY,
        deadline=DEADLINE,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tally(case: Case) -> None:
    result = run(case)
    assert result.principals == case.counted
    assert tuple(r.reason for r in result.refused) == case.refused
    assert (result.denied_by.principal if result.denied_by else None) == case.denied_by
    assert result.verified is case.verified
    assert result.threshold == requirements(case.tier).approvals
    assert result.missing == max(0, result.threshold - len(case.counted))
    # Every ballot is accounted for exactly once: counted, refused, or the deny.
    accounted = [c.ballot for c in result.counted] + [r.ballot for r in result.refused]
    accounted += [result.denied_by.ballot] if result.denied_by else []
    assert sorted(accounted, key=case.ballots.index) == list(case.ballots)


def test_case_names_are_unique() -> None:
    assert len({c.name for c in CASES}) == len(CASES)


def test_counted_carries_principal_type_and_the_ballot_as_evidence() -> None:
    ballots = (vote("slack:UALICE", channel="slack"), vote("bob"))
    result = run(Case("evidence", ballots, True, ()))
    assert result.counted == (
        Counted("alice", "manager", ballots[0], frozenset({"manager"})),
        Counted("bob", "compliance", ballots[1], frozenset({"compliance"})),
    )
    assert result.counted[0].ballot.vote_event == '{"vote":"slack:UALICE"}'


def test_refused_carries_the_ballot() -> None:
    stranger = vote("mallory")
    assert run(Case("refused", (stranger,), False, ())).refused == (Refused(stranger, ReasonCode.UNKNOWN_APPROVER),)


def test_denied_by_is_the_first_deny_with_its_type() -> None:
    first, second = vote("slack:UBOB", DENY), vote("carol", DENY)
    result = run(Case("deny", (vote("alice"), first, second), False, ()))
    assert result.denied_by == Counted("bob", "compliance", first, frozenset({"compliance"}))
    assert result.refused == (Refused(second, ReasonCode.DUPLICATE_DENY),)


@pytest.mark.parametrize(
    ("received_at", "deadline"),
    [
        (datetime(2024, 1, 15, 10, 0), DEADLINE),  # naive vote, aware deadline
        (DEADLINE - timedelta(minutes=1), DEADLINE.replace(tzinfo=None)),  # aware vote, naive deadline
    ],
)
def test_a_time_that_cannot_be_compared_fails_closed_without_raising(received_at: datetime, deadline: datetime) -> None:
    ballot = Ballot("v-1", "alice", APPROVE, RIGHT, received_at, "cli", "{}")
    result = tally(
        (ballot,),
        requirements=requirements(Tier.MEDIUM),
        digest=RIGHT,
        requester_ids=REQUESTER,
        directory=DIRECTORY,
        deadline=deadline,
    )
    assert result.refused == (Refused(ballot, ReasonCode.AFTER_DEADLINE),)
    assert not result.verified


def test_deadline_in_another_zone_is_the_same_instant() -> None:
    zone = DEADLINE.astimezone(timezone(timedelta(hours=2)))
    on_time = vote("alice", at=0)
    result = tally(
        (on_time,),
        requirements=requirements(Tier.MEDIUM),
        digest=RIGHT,
        requester_ids=REQUESTER,
        directory=DIRECTORY,
        deadline=zone,
    )
    assert result.verified


def test_empty_directory_fails_closed() -> None:
    result = tally(
        (vote("alice"), vote("bob")),
        requirements=requirements(Tier.HIGH),
        digest=RIGHT,
        requester_ids=REQUESTER,
        directory=Directory(()),
        deadline=DEADLINE,
    )
    assert not result.verified
    assert [r.reason for r in result.refused] == ["unknown_approver", "unknown_approver"]


# --- TallyResult ------------------------------------------------------------------

A = Counted("alice", "manager", vote("alice"))
B = Counted("bob", "compliance", vote("bob"))


@pytest.mark.parametrize(
    ("threshold", "counted", "denied_by", "missing", "verified"),
    [
        (0, (), None, 0, True),
        (0, (), A, 0, False),
        (1, (), None, 1, False),
        (1, (A,), None, 0, True),
        (2, (A,), None, 1, False),
        (2, (A, B), None, 0, True),
        (2, (A, B), A, 0, False),
        (1, (A, B), None, 0, True),
        (3, (A, B), None, 1, False),
    ],
)
def test_result_missing_and_verified(
    threshold: int,
    counted: tuple[Counted[Ballot], ...],
    denied_by: Counted[Ballot] | None,
    missing: int,
    verified: bool,
) -> None:
    result = TallyResult(threshold, counted, (), denied_by)
    assert (result.missing, result.verified) == (missing, verified)


@pytest.mark.parametrize(
    ("threshold", "counted", "message"),
    [
        (-1, (), "threshold must not be negative"),
        (2, (A, A), "distinct principals"),
    ],
)
def test_result_rejects_nonsense(threshold: int, counted: tuple[Counted[Ballot], ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TallyResult(threshold, counted, (), None)
