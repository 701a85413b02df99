"""Approvals under a long history: the work per request and per tick with many closed requests held.

    .venv/bin/python bench/approvals_held.py --held 300000

An approvals instance holds each closed request's state for `closed_retention_seconds`
(two hours by default), so that a replayed request or a late vote still finds it: at a
steady 200 requests/s, about 1.4 million states. This bench restores an instance with
`--held` closed low-risk states (the restore path: `on_assigned` from a changelog that
holds them), then runs signed low-risk requests through the service's handler in
batches of `--batch` (2 is what a processor batch holds at 200/s) and calls its
one-second tick. The reference is the same run on an instance that holds nothing, in
the same process. Goal: the work per request and per tick does not grow with the
history held: the CPU per request on the empty instance divided by that on the one
holding the history ≥ 0.9; the tick's cost is printed in ms. The held states span the
last hour, inside the retention, so these ticks forget nothing: they time the scan, not
the forgetting (tests/unit/test_approvals_held.py covers what is forgotten, and when).
Also prints the memory each held closed state takes: the RSS growth over the restore,
which includes the restore's own temporaries, so a little above the states alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from approvals.adapters.state import StateStore
from approvals.service import ApprovalsService
from approvals.settings import ApprovalsSettings
from atb_identity import TrustBundle, bundle_path, ensure_svid, sign_envelope
from atb_runtime import Incoming, Outgoing, outgoing_envelope
from atb_runtime.agents import load_agent_registry
from contracts import (
    AccountableParty,
    ApprovalStateChanged,
    IssuanceRequested,
    LegitimateInterest,
    Tier,
    decode_envelope,
    make_envelope,
    payload_of,
)
from contracts.directory import Directory
from contracts.requirements import Requirements

AGENT = "spiffe://atb.local/agent/bench"
APPROVALS = "spiffe://atb.local/svc/approvals"
GOAL = 0.9
NS = "bench."
REQUESTS_TOPIC = f"{NS}atb.poa.requests"


class _LowRisk:
    """The policy answer as the real client serves it from its cache: this bench times the service's own work."""

    async def for_request(self, request: IssuanceRequested) -> Requirements:
        return Requirements(Tier.LOW, 0, False, (), 0, 300, "bench")


class _Restored(StateStore):
    """The changelog as a restore reads it: `held` closed states, written over the last hour."""

    def __init__(self, template: ApprovalStateChanged | None, held: int) -> None:
        super().__init__("unused:9092", NS, APPROVALS)
        self._template, self._held = template, held

    async def load(
        self, partitions: Iterable[int], *, since: datetime | None = None
    ) -> dict[int, dict[str, ApprovalStateChanged]]:
        if self._template is None or not self._held:
            return {}
        start = datetime.now(UTC) - timedelta(hours=1)
        step = timedelta(hours=1) / self._held
        data = self._template.model_dump(mode="json")
        states = {}
        for i in range(self._held):
            # Decoded one by one, as a restore does: no state shares its parts with another.
            data |= {"request_id": f"old-{i}", "updated_at": (start + i * step).isoformat()}
            states[f"old-{i}"] = ApprovalStateChanged.model_validate_json(json.dumps(data))
        return {0: states}


def _requests(state: Path, n: int, tag: str) -> list[Incoming]:
    svid = ensure_svid(state, AGENT)
    leg = LegitimateInterest(ref="LI-B", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="b"))
    records = []
    for i in range(n):
        request = IssuanceRequested(
            request_id=f"{tag}-{i}",
            agent_id=AGENT,
            tenant="acme",
            action="crm.contact.read",
            resource=f"crm:contact/{i}",
            leg=leg,
            requested_at=datetime.now(UTC),
        )
        out = outgoing_envelope(sign_envelope(make_envelope(request, source=AGENT), svid), REQUESTS_TOPIC)
        records.append(Incoming(REQUESTS_TOPIC, 0, i, out.key, out.value))
    return records


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def _service(state: Path, template: ApprovalStateChanged | None, held: int) -> ApprovalsService:
    directory = Directory.from_mapping(
        json.loads((Path(__file__).parents[1] / "config" / "approvers.json").read_text())
    )
    svid = ensure_svid(state, APPROVALS)  # makes the dev PKI and its bundle on first use
    service = ApprovalsService(
        ApprovalsSettings(state_dir=state, topic_namespace=NS, request_attesters=[]),
        _LowRisk(),
        TrustBundle.load(bundle_path(state), "atb.local"),
        directory,
        _Restored(template, held),
        svid,
        load_agent_registry(),
    )
    await service.on_assigned({0})
    return service


async def _per_request(service: ApprovalsService, records: list[Incoming], batch: int) -> tuple[float, list[Outgoing]]:
    """CPU seconds per request through the handler, in batches of `batch`."""
    out: list[Outgoing] = []
    cpu = time.process_time()
    for first in range(0, len(records), batch):
        out += await service.handle(records[first : first + batch])
    return (time.process_time() - cpu) / len(records), out


async def _per_tick(service: ApprovalsService, ticks: int) -> float:
    cpu = time.process_time()
    for _ in range(ticks):
        await service.tick()
    return (time.process_time() - cpu) / ticks


def _closed_state(outputs: list[Outgoing]) -> ApprovalStateChanged:
    for out in outputs:
        if out.value is not None and out.topic.endswith("approvals.state"):
            payload = payload_of(decode_envelope(out.value))
            if isinstance(payload, ApprovalStateChanged) and payload.status == "closed":
                return payload
    raise SystemExit("the handler wrote no closed state for a low-risk request: nothing to hold")


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--held", type=int, default=300_000, help="closed states the second instance holds")
    parser.add_argument("--requests", type=int, default=2000, help="requests timed on each instance")
    parser.add_argument("--batch", type=int, default=2, help="requests per handler call")
    parser.add_argument("--ticks", type=int, default=5, help="ticks timed on each instance")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atb-bench-approvals-") as tmp:
        state = Path(tmp)
        empty = await _service(state, None, 0)
        warm, first = await _per_request(empty, _requests(state, 200, "warm"), args.batch)
        template = _closed_state(first)
        empty_request, _ = await _per_request(empty, _requests(state, args.requests, "e"), args.batch)
        empty_tick = await _per_tick(empty, args.ticks)
        del empty
        print(f"restoring {args.held:,} closed states…", flush=True)
        rss = _rss_bytes()
        held = await _service(state, template, args.held)
        per_state = (_rss_bytes() - rss) / max(1, args.held)
        held_request, _ = await _per_request(held, _requests(state, args.requests, "h"), args.batch)
        held_tick = await _per_tick(held, args.ticks)
    ratio = empty_request / held_request
    report = {
        "held": args.held,
        "batch": args.batch,
        "empty_us_per_request": round(empty_request * 1e6),
        "held_us_per_request": round(held_request * 1e6),
        "ratio": round(ratio, 3),
        "goal_ratio": GOAL,
        "empty_tick_ms": round(empty_tick * 1e3, 2),
        "held_tick_ms": round(held_tick * 1e3, 2),
        "bytes_per_held_state": round(per_state),
    }
    del warm
    if args.json:
        print(json.dumps(report))
        return
    print(f"per request, batches of {args.batch}: empty instance {report['empty_us_per_request']} µs of CPU,")
    print(f"  holding {args.held:,} closed states {report['held_us_per_request']} µs")
    print(f"CPU per request, empty / holding = {ratio:.3f} (goal ≥ {GOAL}: the work does not grow with what is held)")
    print(
        f"per tick: empty {report['empty_tick_ms']} ms, holding {args.held:,} closed states {report['held_tick_ms']} ms"
    )
    print(f"memory per held closed state: about {per_state / 1024:.1f} KiB (RSS growth over the restore)")


if __name__ == "__main__":
    asyncio.run(main())
