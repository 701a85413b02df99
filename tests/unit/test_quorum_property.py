"""Quorum by groups: approvals' tally against a reference model that tries every assignment.

10,000 random vote histories from a seeded generator (hypothesis at
`max_examples=10_000` took far longer than this loop for the same number of
histories; the seed is printed on failure, so every history can be replayed).
Each history: a random directory of up to five people in random groups (some in
two or three), a random composition (``all_of``, ``any_of``, a total above its
minimum), a requester who may be one of the approvers, and up to ten ballots
from approvers and strangers, approvals and denies, under other spellings.

The reference is written the other way round from `contracts.quorum.assign`: no
matching at all. It decides who counts from the directory up front, then tries
every way of giving each counted person one of their groups (or none), and asks
whether any of those assignments meets ``all_of`` plus one ``any_of`` entry; the
fewest more people needed is the minimum over all assignments. The tally must
agree on whether the request is approved, who counted and how many are missing,
its own assignment must be a valid one, and reordering the ballots must change
none of it.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from approvals.domain.tally import Ballot, TallyResult, tally
from contracts import Tier, VoteChoice
from contracts.directory import Approver, Directory
from contracts.quorum import Composition, GroupCount
from contracts.requirements import Requirements

HISTORIES = 10_000
SEED = 20261205
DEADLINE = datetime(2026, 1, 1, 12, tzinfo=UTC)
DIGEST = "sha256v2:" + "c" * 64
AGENT = "spiffe://atb.local/agent/finance-bot"
NAMES = ("alice", "bob", "carol", "dave", "erin")
GROUPS = ("manager", "compliance", "security", "finance")
STRANGERS = ("mallory", "slack:UNOBODY")


@dataclass(frozen=True)
class History:
    seed: int
    directory: Directory
    requirements: Requirements
    accountable: str
    ballots: tuple[Ballot, ...]

    def run(self, ballots: Sequence[Ballot] | None = None) -> TallyResult:
        return tally(
            self.ballots if ballots is None else ballots,
            requirements=self.requirements,
            digest=DIGEST,
            requester_ids=(AGENT, self.accountable),
            directory=self.directory,
            deadline=DEADLINE,
        )


def _history(seed: int) -> History:
    rng = random.Random(seed)
    people = rng.sample(NAMES, rng.randint(1, len(NAMES)))
    approvers = tuple(
        Approver(
            principal=name,
            type=rng.choice(GROUPS),
            groups=frozenset(rng.sample(GROUPS, rng.choice((1, 1, 2, 2, 3)))),
            tiers=frozenset({Tier.MEDIUM, Tier.HIGH, Tier.CRITICAL}),
            identities=frozenset({f"spiffe://atb.local/user/{name}", f"slack:U{name.upper()}"}),
        )
        for name in people
    )
    named = rng.sample(GROUPS[:3], rng.randint(0, 3))
    all_of = tuple(GroupCount(g, rng.choice((1, 1, 2))) for g in named[: rng.randint(0, len(named))])
    rest = [g for g in GROUPS[:3] if g not in {e.group for e in all_of}] + rng.sample(named, len(named))
    any_of = tuple(GroupCount(g, rng.choice((1, 1, 2))) for g in dict.fromkeys(rest[: rng.randint(0, 3)]))
    composition = Composition(all_of, any_of)
    eligible = sorted(composition.groups | set(rng.sample(GROUPS, rng.randint(0, 2))) or {"manager"})
    total = max(2, composition.minimum) + rng.choice((0, 0, 1))
    requirements = Requirements(Tier.HIGH, total, False, tuple(eligible), 600, 120, "prop", composition)
    accountable = rng.choice(("emp-999", "emp-999", *(f"slack:U{n.upper()}" for n in people)))
    pool = [i for a in approvers for i in (a.principal, *sorted(a.identities))] * 3 + list(STRANGERS)
    ballots = tuple(
        Ballot(
            vote_id=f"v{i}",
            identity=rng.choice((str, str.upper, lambda s: f" {s} "))(rng.choice(pool)),
            choice=VoteChoice.DENY if rng.random() < 0.08 else VoteChoice.APPROVE,
            digest=DIGEST,
            received_at=DEADLINE - timedelta(seconds=rng.randint(1, 500)),
            channel="cli",
            vote_event=f'{{"v":{i}}}',
        )
        for i in range(rng.randint(0, 10))
    )
    return History(seed, Directory(approvers), requirements, accountable, ballots)


# --- the reference model --------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    approved: bool
    counted: frozenset[str]
    denied: bool
    missing: int


def _person(directory: Directory, identity: str) -> Approver | None:
    wanted = identity.strip().casefold()
    for approver in directory.approvers:
        if wanted == approver.principal.casefold() or wanted in approver.identities:
            return approver
    return None


def _needs(composition: Composition) -> list[Counter[str]]:
    """What each way of meeting the composition asks of each group: all_of plus one any_of entry."""
    base: Counter[str] = Counter({e.group: e.count for e in composition.all_of})
    if not composition.any_of:
        return [base]
    return [base + Counter({e.group: e.count}) for e in composition.any_of]


def reference(h: History) -> Expected:
    need = h.requirements
    requester = _person(h.directory, h.accountable)
    eligible_people = {
        a.principal: a.groups
        for a in h.directory.approvers
        if a is not requester and a.groups & set(need.eligible_groups) and need.tier in a.tiers
    }
    voters = [(p.principal, b.choice) for b in h.ballots if (p := _person(h.directory, b.identity)) is not None]
    counted = frozenset(p for p, choice in voters if p in eligible_people and choice is VoteChoice.APPROVE)
    denied = any(p in eligible_people and choice is VoteChoice.DENY for p, choice in voters)
    people = sorted(counted)
    options = [[None, *sorted(eligible_people[p] & need.composition.groups)] for p in people]
    fewest = None
    for choice in itertools.product(*options):
        have = Counter(g for g in choice if g is not None)
        for wanted in _needs(need.composition):
            open_slots = sum(max(0, n - have[g]) for g, n in wanted.items())
            short = max(open_slots, need.approvals - len(people))
            fewest = short if fewest is None else min(fewest, short)
    assert fewest is not None
    return Expected(not denied and fewest == 0, counted, denied, fewest)


def observed(result: TallyResult) -> Expected:
    return Expected(result.verified, frozenset(result.principals), result.denied_by is not None, result.missing)


def _assignment_is_valid(h: History, result: TallyResult) -> None:
    """Each counted person fills at most one requirement, of one of their own groups; a met quorum is met by it."""
    groups = {c.principal: c.groups for c in result.counted}
    have: Counter[str] = Counter()
    for assignment in result.quorum.assignments:
        if assignment.group is not None:
            assert assignment.group in groups[assignment.principal], (h.seed, assignment)
            have[assignment.group] += 1
    assert len(result.quorum.assignments) == len(result.counted)
    if result.quorum.satisfied:
        alternative = result.quorum.alternative
        wanted = Counter({e.group: e.count for e in h.requirements.composition.all_of})
        if alternative is not None:
            wanted[alternative.group] += alternative.count
        assert all(have[g] >= n for g, n in wanted.items()), (h.seed, have, wanted)


def test_the_tally_matches_the_reference_over_10000_histories() -> None:
    outcomes: Counter[str] = Counter()
    for seed in range(SEED, SEED + HISTORIES):
        h = _history(seed)
        result = h.run()
        expected = reference(h)
        assert observed(result) == expected, f"history seed {seed}: {h}"
        _assignment_is_valid(h, result)
        # Vote order never changes the answer, nor who fills what.
        shuffled = list(h.ballots)
        random.Random(seed).shuffle(shuffled)
        again = h.run(shuffled)
        assert again.verified == result.verified, f"history seed {seed}: order changed the outcome"
        assert again.quorum.assignments == result.quorum.assignments, f"history seed {seed}"
        outcomes["approved" if expected.approved else "denied" if expected.denied else "open"] += 1
        if (
            not h.requirements.composition.empty
            and not expected.denied
            and len(expected.counted) >= (h.requirements.approvals)
        ):
            outcomes["enough people, composition decides"] += 1
    # The generator reaches every interesting case, often enough to mean something.
    assert outcomes["approved"] > 500, outcomes
    assert outcomes["open"] > 500, outcomes
    assert outcomes["denied"] > 200, outcomes
    assert outcomes["enough people, composition decides"] > 500, outcomes
