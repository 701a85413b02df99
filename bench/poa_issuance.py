"""Issuer throughput: PoAs/s through the issuer's handler next to raw Ed25519 signatures/s.

    .venv/bin/python bench/poa_issuance.py --quorums 3000

Both in the same process and run. The PoA path is everything the issuer does per
QuorumReached: decode, the evidence re-check (the embedded request's proof of
origin, the policy answer — served from its cache, as in production bursts),
claims, the EdDSA JWT, the PoaIssued and audit envelopes. The raw figure signs a
payload of the same size with the same key object. The floor is the work no issuer
can skip: 2 raw Ed25519 verifications (the request's and the quorum's proofs) and 1
raw signature (the PoA) per PoA. Goal: PoAs/s ≥ 60% of the floor. Prints the
numbers, the ratio and the goal.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atb_identity import TrustBundle, bundle_path, ensure_svid, sign_envelope
from atb_runtime import Incoming, Outgoing, outgoing_envelope
from atb_runtime.agents import load_agent_registry
from contracts import (
    AccountableParty,
    IssuanceRequested,
    LegitimateInterest,
    QuorumReached,
    Tier,
    digest_of,
    encode_envelope,
    make_envelope,
)
from contracts.directory import Directory
from contracts.requirements import Requirements
from issuer.adapters.evidence import EvidenceVerifier
from issuer.adapters.keyring import SigningKeyRing
from issuer.service import IssuerService
from issuer.settings import IssuerSettings

AGENT = "spiffe://atb.local/agent/bench"
APPROVALS = "spiffe://atb.local/svc/approvals"
GOAL = 0.6
CHUNK = 250
"""Quorums per handler call (a processor batch). The CPU time per PoA is reported for the cheapest
batch, of the issuer and of the floor alike: on a shared machine the minimum is the steadiest figure."""


class _CachedPolicy:
    """The policy answer as the real client serves it from its cache during a burst."""

    async def for_request(self, request: IssuanceRequested) -> Requirements:
        return Requirements(
            tier=Tier.LOW,
            approvals=0,
            ticket_required=False,
            eligible_groups=(),
            pending_seconds=0,
            poa_ttl_seconds=300,
            policy_version="bench",
        )


def _quorums(state: Path, n: int) -> list[Incoming]:
    svid = ensure_svid(state, AGENT)
    approvals = ensure_svid(state, APPROVALS)
    leg = LegitimateInterest(ref="LI-B", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="b"))
    records = []
    for i in range(n):
        request = IssuanceRequested(
            request_id=f"b-{i}",
            agent_id=AGENT,
            tenant="acme",
            action="crm.contact.read",
            resource=f"crm:contact/{i}",
            leg=leg,
            requested_at=datetime.now(UTC),
        )
        event = encode_envelope(sign_envelope(make_envelope(request, source=AGENT), svid)).decode()
        quorum = QuorumReached(
            request_id=request.request_id,
            tier=Tier.LOW,
            required_approvals=0,
            request_digest=digest_of(request),
            poa_ttl_seconds=300,
            request=request,
            request_event=event,
            votes=(),
            decided_at=datetime.now(UTC),
        )
        proven = sign_envelope(make_envelope(quorum, source=APPROVALS), approvals)
        out = outgoing_envelope(proven, "atb.approvals.outcomes")
        records.append(Incoming("atb.approvals.outcomes", 0, i, out.key, out.value))
    return records


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quorums", type=int, default=3000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--profile", metavar="FILE", help="write a cProfile of the issuer's handler to FILE (and print its top)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atb-bench-issuer-") as tmp:
        state = Path(tmp)
        records = _quorums(state, args.quorums)
        ring = SigningKeyRing.ensure(state / "issuer" / "keys")
        directory = Directory.from_mapping(
            json.loads((Path(__file__).parents[1] / "config" / "approvers.json").read_text())
        )
        bundle = TrustBundle.load(bundle_path(state), "atb.local")
        evidence = EvidenceVerifier(
            bundle=bundle,
            directory=directory,
            policy=_CachedPolicy(),
            agents=load_agent_registry(),
            request_attesters=(),
            vote_attesters=(),
        )
        service = IssuerService(IssuerSettings(state_dir=state), ring.current, evidence, bundle)
        profiler = cProfile.Profile() if args.profile else None
        out: list[Outgoing] = []
        chunk_cpu: list[float] = []
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for first in range(0, len(records), CHUNK):
            cpu_start = time.process_time()
            out += await service.handle(records[first : first + CHUNK])
            chunk_cpu.append((time.process_time() - cpu_start) / len(records[first : first + CHUNK]))
        if profiler is not None:
            profiler.disable()
        poa_seconds = time.perf_counter() - start
        assert sum(1 for o in out if o.topic == "atb.poa.issued") == args.quorums, "not every quorum got a PoA"
        key = ring.current(datetime.now(UTC)).private
        raw_seconds, floor_seconds, floor_chunks = _floors(key, args.quorums)
    poa_cpu, floor_cpu = min(chunk_cpu), min(floor_chunks)
    if profiler is not None:
        profiler.dump_stats(args.profile)
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
    poas = args.quorums / poa_seconds
    raw, floor = args.quorums / raw_seconds, args.quorums / floor_seconds
    ratio = poas / floor
    report = {
        "poas_per_s": round(poas),
        "raw_signs_per_s": round(raw),
        "floor_per_s": round(floor),
        "ratio_vs_floor": round(ratio, 3),
        "goal_ratio": GOAL,
        "ratio_to_goal": round(ratio / GOAL, 3),
        "cpu_us_per_poa": round(poa_cpu * 1e6),
        "floor_cpu_us_per_poa": round(floor_cpu * 1e6),
        "cpu_ratio_vs_floor": round(floor_cpu / poa_cpu, 3),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(f"issuer: {poas:,.0f} PoAs/s")
    print(f"floor (2 raw Ed25519 verifications + 1 raw signature per PoA): {floor:,.0f}/s")
    print(f"raw Ed25519 signatures alone: {raw:,.0f}/s")
    print(f"issuer/floor = {ratio:.3f} (goal ≥ {GOAL})")
    print(
        f"CPU time per PoA (best batch of {CHUNK}): issuer {report['cpu_us_per_poa']} µs,"
        f" floor {report['floor_cpu_us_per_poa']} µs;"
        f" floor/issuer by CPU time = {report['cpu_ratio_vs_floor']}"
    )


def _floors(key: Ed25519PrivateKey, n: int) -> tuple[float, float, list[float]]:
    """Seconds for `n` raw signatures, and for `n` times (verify the request, verify the quorum, sign the PoA),
    and the CPU seconds per PoA of the latter in each batch of CHUNK.

    The floor is the work no issuer can skip: the request's and the quorum's proofs are
    Ed25519 signatures over about a kilobyte each, the PoA one signature. Certificate
    chains are not in it: they are validated once per chain and remembered until the
    first certificate of the chain expires (atb_identity/proof.py), so a burst of
    PoAs for the same agents pays no chain check.
    """
    payload = b"x" * 900  # about a PoA's signing input
    request, quorum = b"r" * 1100, b"q" * 2600  # about the signed bytes of the two events
    signer = Ed25519PrivateKey.generate()
    public = signer.public_key()
    request_sig, quorum_sig = signer.sign(request), signer.sign(quorum)
    start = time.perf_counter()
    for _ in range(n):
        key.sign(payload)
    raw_seconds = time.perf_counter() - start
    chunk_cpu = []
    start = time.perf_counter()
    for first in range(0, n, CHUNK):
        cpu_start = time.process_time()
        for _ in range(first, min(n, first + CHUNK)):
            public.verify(request_sig, request)
            public.verify(quorum_sig, quorum)
            key.sign(payload)
        chunk_cpu.append((time.process_time() - cpu_start) / (min(n, first + CHUNK) - first))
    return raw_seconds, time.perf_counter() - start, chunk_cpu


if __name__ == "__main__":
    asyncio.run(main())
