"""Which bundle revision each OPA instance serves (`atb policy status`), from OPA's own API.

`GET /v1/status` (the status plugin, on in every configuration `atb policy
opa-config` writes) gives per bundle the active revision, the last successful
activation and the last error (a refused signature shows here as
`failed to verify JWT signature: ...`). Without the status plugin, `GET
/v1/data/system/bundles` still gives each bundle's manifest, hence its revision.
An instance is *stale* when it serves another revision than the expected one
(the one the bundle store serves, or `--expect`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import orjson

from atb.policy.errors import PolicyEndpointError

__all__ = ["OpaBundleReport", "opa_bundle_reports", "wait_for_revision"]


@dataclass(frozen=True)
class OpaBundleReport:
    opa: str
    bundle: str | None
    revision: str | None
    activated_at: str | None
    error: str | None
    reachable: bool = True

    def stale(self, expected: str | None) -> bool | None:
        """True/False against the expected revision; None when nothing is expected."""
        if expected is None:
            return None
        return self.revision != expected


def _time(value: object) -> str | None:
    """OPA's timestamp, or None for none (OPA writes Go's zero time, 0001-01-01, for "never")."""
    return value if isinstance(value, str) and value and not value.startswith("0001-01-01") else None


async def _get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, object]:
    async with session.get(url) as response:
        return response.status, orjson.loads(await response.read() or b"null")


async def _reports_of(session: aiohttp.ClientSession, base: str) -> list[OpaBundleReport]:
    status, body = await _get_json(session, f"{base}/v1/status")
    if status == 200 and isinstance(body, dict) and isinstance(body.get("result"), dict):
        bundles = body["result"].get("bundles") or {}
        if isinstance(bundles, dict):
            reports = []
            for name, st in sorted(bundles.items()):
                st = st if isinstance(st, dict) else {}
                message = st.get("message") or None
                reports.append(
                    OpaBundleReport(
                        opa=base,
                        bundle=name,
                        revision=st.get("active_revision") or None,
                        activated_at=_time(st.get("last_successful_activation")),
                        error=str(message) if message else None,
                    )
                )
            if reports:
                return reports
    # No status plugin (or no bundle yet): the manifests OPA keeps under data.system.bundles.
    status, body = await _get_json(session, f"{base}/v1/data/system/bundles")
    if status != 200 or not isinstance(body, dict):
        raise PolicyEndpointError(f"OPA at {base} answered {status} for /v1/data/system/bundles")
    manifests = body.get("result") or {}
    reports = []
    if isinstance(manifests, dict):
        for name, entry in sorted(manifests.items()):
            manifest = entry.get("manifest") if isinstance(entry, dict) else None
            revision = manifest.get("revision") if isinstance(manifest, dict) else None
            reports.append(OpaBundleReport(base, name, revision or None, None, None))
    return reports or [OpaBundleReport(base, None, None, None, "no bundle loaded")]


async def opa_bundle_reports(urls: list[str], timeout_s: float = 5.0) -> list[OpaBundleReport]:
    """One report per (OPA instance, bundle); an instance that does not answer is a report too."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(url: str) -> list[OpaBundleReport]:
            base = url.rstrip("/")
            try:
                return await _reports_of(session, base)
            except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError, PolicyEndpointError) as exc:
                return [OpaBundleReport(base, None, None, None, f"unreachable: {exc}", reachable=False)]

        results = await asyncio.gather(*(one(u) for u in urls))
    return [report for group in results for report in group]


async def wait_for_revision(
    url: str,
    bundle: str,
    predicate: Callable[[OpaBundleReport], bool],
    timeout_s: float = 60.0,
    interval_s: float = 0.2,
) -> OpaBundleReport:
    """Poll OPA's status until `predicate(report)` holds for `bundle`; PolicyEndpointError after the timeout."""
    deadline = time.monotonic() + timeout_s
    last: OpaBundleReport | None = None
    while True:
        for report in await opa_bundle_reports([url]):
            if report.bundle == bundle:
                last = report
                if predicate(report):
                    return report
        if time.monotonic() > deadline:
            raise PolicyEndpointError(f"OPA at {url}: bundle {bundle} did not reach the awaited state; last: {last}")
        await asyncio.sleep(interval_s)
