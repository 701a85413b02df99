"""approvals.domain.tally against an independently written reference model.

Thousands of random vote histories: a random directory of a few approvers (random
groups, tiers and alias identities), random requester ids that may be some
approver's alias, ballots from approvers, strangers and requesters under case,
fullwidth and decomposed spellings, right and wrong digests, times either side
of the deadline. The reference below is written the other way round from
`tally`: it scans the directory linearly instead of indexing it, decides who
the requester people are and who is eligible up front, and dedupes by principal
after filtering.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from hypothesis import event, given, settings
from hypothesis import strategies as st

from approvals.domain.directory import Approver, Directory, normalize
from approvals.domain.intake import Requirements
from approvals.domain.tally import Ballot, TallyResult, tally
from contracts import Tier, VoteChoice

DEADLINE = datetime(2024, 1, 15, 10, 5, tzinfo=UTC)
RIGHT = "sha256:" + "a" * 64
WRONG = "sha256:" + "b" * 64
AGENT = "spiffe://atb.local/agent/crm-bot"
PRINCIPALS = ("alice", "bob", "carol", "dave", "erin")
GROUPS = ("manager", "compliance", "security", "finance")
HUMAN_TIERS = (Tier.MEDIUM, Tier.HIGH, Tier.CRITICAL)
STRANGERS = ("mallory", "spiffe://atb.local/user/mallory", "slack:UNOBODY", "emp-999", "emp-10")
T = TypeVar("T")
FLOOR = {Tier.LOW: 0, Tier.MEDIUM: 1, Tier.HIGH: 2, Tier.CRITICAL: 2}


# --- spellings of one identity ---------------------------------------------------


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


VARIANTS: tuple[Callable[[str], str], ...] = (
    lambda s: s,
    str.upper,
    str.title,
    _fullwidth,
    lambda s: f"  {s}\u00a0",
    lambda s: unicodedata.normalize("NFKD", _fullwidth(s.upper())),
)


def spelled(identity: str) -> st.SearchStrategy[str]:
    return st.sampled_from(VARIANTS).map(lambda variant: variant(identity))


# --- random scenarios -------------------------------------------------------------
#
# Each approver and each ballot is decoded from one random integer: drawing a
# dozen small values per ballot made generation, not tallying, the cost of this
# file. Zero decodes to the plainest choice (first name, as written, approve,
# right digest, on time), so shrinking still heads for simple histories.


class Digits:
    """Mixed-radix digits of one random integer."""

    def __init__(self, value: int) -> None:
        self.value = value

    def pick(self, options: Sequence[T]) -> T:
        self.value, index = divmod(self.value, len(options))
        return options[index]

    def subset(self, options: Sequence[T], *, nonempty: bool = False) -> frozenset[T]:
        chosen = frozenset(o for o in options if self.pick((False, True)))
        return chosen or (frozenset(options[:1]) if nonempty else chosen)


@dataclass(frozen=True)
class Scenario:
    directory: Directory
    requirements: Requirements
    requester_ids: tuple[str, ...]
    ballots: tuple[Ballot, ...]

    def run(self, ballots: Sequence[Ballot] | None = None) -> TallyResult:
        return tally(
            self.ballots if ballots is None else ballots,
            requirements=self.requirements,
            digest=RIGHT,
            requester_ids=self.requester_ids,
            directory=self.directory,
            deadline=DEADLINE,
        )


def make_approver(n: int, name: str, code: int, agent_taken: bool) -> Approver:
    d = Digits(code)
    name_group = GROUPS[n % len(GROUPS)]
    aliases = d.subset((f"slack:U{n}", f"emp-{100 + n}"))
    # Rarely, an approver misconfigured with the agent's own SPIFFE ID (only one: one string is one person).
    if not agent_taken and d.pick(range(8)) == 7:
        aliases |= {AGENT}
    return Approver(
        principal=d.pick((name, name.upper(), name.title())),
        type=d.pick(GROUPS),
        groups=d.pick((frozenset({name_group}), d.subset(GROUPS, nonempty=True))),
        tiers=d.pick((frozenset(HUMAN_TIERS), d.subset(HUMAN_TIERS, nonempty=True))),
        identities=frozenset({f"spiffe://atb.local/user/{name}", *aliases}),
    )


def make_directory(codes: Sequence[int]) -> Directory:
    made: list[Approver] = []
    for n, (name, code) in enumerate(zip(PRINCIPALS, codes, strict=False)):
        made.append(make_approver(n, name, code, any(AGENT in a.identities for a in made)))
    return Directory(tuple(made))


def make_requirements(code: int) -> Requirements:
    d = Digits(code)
    tier = d.pick((Tier.HIGH, Tier.MEDIUM, Tier.CRITICAL, Tier.HIGH, Tier.LOW))
    approvals = FLOOR[tier] + d.pick((0, 0, 1))
    groups = tuple(sorted(d.pick((GROUPS[:3], GROUPS[:2], d.subset(GROUPS)))))
    return Requirements(tier, approvals, tier is Tier.CRITICAL, groups, 300, 120, "prop-1")


def make_ballot(i: int, code: int, pools: Sequence[Sequence[str]]) -> Ballot:
    """`pools` are picked from evenly, then an identity from the pool: weight them by repeating."""
    d = Digits(code)
    return Ballot(
        vote_id=f"v{i}",
        identity=d.pick(VARIANTS)(d.pick(d.pick(pools))),
        choice=d.pick((VoteChoice.APPROVE, VoteChoice.APPROVE, VoteChoice.APPROVE, VoteChoice.DENY)),
        digest=d.pick((RIGHT, RIGHT, RIGHT, WRONG)),
        received_at=DEADLINE + timedelta(seconds=d.pick((-60, -300, -1, 0, -30, 1, 60))),
        channel=d.pick(("cli", "slack")),
        vote_event=f'{{"v":{i}}}',
    )


def approver_identities(directory: Directory) -> list[str]:
    return [i for a in directory.approvers for i in (a.principal, *sorted(a.identities))]


CODE = st.integers(0, 2**24)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    directory = make_directory(draw(st.lists(CODE, min_size=1, max_size=len(PRINCIPALS))))
    known = approver_identities(directory)
    requester = Digits(draw(CODE))
    # Usually someone outside the directory; often one of its approvers, under any spelling.
    accountable = requester.pick(VARIANTS)(requester.pick(("emp-200", "emp-200", *known, *STRANGERS)))
    requester_ids = requester.pick(((AGENT, accountable), (accountable, AGENT)))
    pools = (known, known, known, known, STRANGERS, (AGENT, accountable))
    count = draw(st.integers(0, 16))  # uniform lengths: hypothesis' own list sizes favour the very short
    codes = draw(st.lists(CODE, min_size=count, max_size=count))
    ballots = tuple(make_ballot(i, code, pools) for i, code in enumerate(codes))
    return Scenario(directory, make_requirements(draw(CODE)), requester_ids, ballots)


# --- the reference model ------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    verified: bool
    counted: tuple[str, ...]
    denied_by: str | None
    reasons: dict[str, str]


def _keyset(approver: Approver) -> set[str]:
    return {normalize(approver.principal), *(normalize(i) for i in approver.identities)}


def _who(directory: Directory, identity: str) -> Approver | None:
    matches = [a for a in directory.approvers if normalize(identity) in _keyset(a)]
    assert len(matches) <= 1
    return matches[0] if matches else None


def _requester_people(s: Scenario) -> set[str]:
    people = {a.principal for r in s.requester_ids if (a := _who(s.directory, r)) is not None}
    strings = {normalize(r) for r in s.requester_ids}
    return people | {a.principal for a in s.directory.approvers if _keyset(a) & strings}


def _eligible_people(s: Scenario) -> set[str]:
    need = s.requirements
    return {
        a.principal for a in s.directory.approvers if need.tier in a.tiers and set(a.groups) & set(need.eligible_groups)
    }


def reference(s: Scenario) -> Expected:
    requesters, eligible = _requester_people(s), _eligible_people(s)
    reasons: dict[str, str] = {}
    valid: list[tuple[Ballot, Approver]] = []
    for b in s.ballots:
        a = _who(s.directory, b.identity)
        if b.received_at > DEADLINE:
            reasons[b.vote_id] = "after_deadline"
        elif a is None:
            reasons[b.vote_id] = "unknown_approver"
        elif a.principal in requesters:
            reasons[b.vote_id] = "self_approval"
        elif a.principal not in eligible:
            reasons[b.vote_id] = "tier_not_allowed" if s.requirements.tier not in a.tiers else "not_eligible"
        elif b.digest != RIGHT:
            reasons[b.vote_id] = "digest_mismatch"
        else:
            valid.append((b, a))
    denies = [a.principal for b, a in valid if b.choice is VoteChoice.DENY]
    reasons |= {b.vote_id: "duplicate_deny" for b, _ in [v for v in valid if v[0].choice is VoteChoice.DENY][1:]}
    first: dict[str, str] = {}
    for b, a in valid:
        if b.choice is VoteChoice.APPROVE:
            first.setdefault(a.principal, b.vote_id)
    for b, a in valid:
        if b.choice is VoteChoice.APPROVE and first[a.principal] != b.vote_id:
            reasons[b.vote_id] = "duplicate"
    counted = tuple(first)
    verified = not denies and len(counted) >= s.requirements.approvals
    return Expected(verified, counted, denies[0] if denies else None, reasons)


def observed(result: TallyResult) -> Expected:
    return Expected(
        result.verified,
        result.principals,
        result.denied_by.principal if result.denied_by else None,
        {r.ballot.vote_id: r.reason for r in result.refused},
    )


# --- properties ------------------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(scenarios())
def test_tally_matches_the_reference_model(s: Scenario) -> None:
    result = s.run()
    assert observed(result) == reference(s)
    event(f"verified={result.verified}, denied={result.denied_by is not None}, counted={len(result.counted)}")
    for refusal in {r.reason for r in result.refused}:
        event(f"refused {refusal}")
    # Invariants, stated on their own so they hold even if both models shared a mistake.
    requesters = {normalize(r) for r in s.requester_ids}
    assert len(result.counted) <= len(_eligible_people(s) - _requester_people(s))
    for vote in result.counted:
        approver = s.directory.resolve(vote.principal)
        assert approver is not None
        assert not approver.keys & requesters
        assert not any(s.directory.same_person(vote.ballot.identity, r) for r in s.requester_ids)
        assert vote.ballot.received_at <= DEADLINE
        assert vote.ballot.digest == RIGHT
    assert len({normalize(p) for p in result.principals}) == len(result.counted)
    assert result.missing == max(0, s.requirements.approvals - len(result.counted))


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_a_duplicate_ballot_never_changes_who_counted(data: st.DataObject) -> None:
    s = data.draw(scenarios().filter(lambda s: bool(s.ballots)))
    original = data.draw(st.sampled_from(s.ballots))
    # The same person again: the same identity or another spelling or alias of it.
    approver = s.directory.resolve(original.identity)
    spellings = [original.identity, *sorted(approver.keys if approver else ())]
    twin = replace(original, vote_id="twin", identity=data.draw(st.sampled_from(spellings).flatmap(spelled)))
    position = data.draw(st.integers(0, len(s.ballots)))
    grown = (*s.ballots[:position], twin, *s.ballots[position:])
    before, after = s.run(), s.run(grown)
    assert set(after.principals) == set(before.principals)
    assert (after.denied_by is None) == (before.denied_by is None)
    if original.choice is VoteChoice.APPROVE:
        assert after.verified == before.verified


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_removing_refused_ballots_changes_nothing_that_counts(s: Scenario) -> None:
    result = s.run()
    refused = {r.ballot.vote_id for r in result.refused}
    kept = s.run([b for b in s.ballots if b.vote_id not in refused])
    assert kept.principals == result.principals
    assert kept.denied_by == result.denied_by
    assert kept.verified == result.verified
    assert kept.refused == ()
