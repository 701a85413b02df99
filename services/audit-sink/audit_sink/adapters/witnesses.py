"""HTTP to witnesses: C2SP tlog-witness `POST <url>/add-checkpoint` (and the read-back the verifier uses)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import aiohttp

__all__ = ["WitnessAnswer", "fetch_latest", "post_checkpoint"]


@dataclass(frozen=True)
class WitnessAnswer:
    status: int
    content_type: str
    text: str


async def post_checkpoint(session: aiohttp.ClientSession, url: str, body: str, timeout: float) -> WitnessAnswer:
    async with session.post(
        url.rstrip("/") + "/add-checkpoint",
        data=body.encode(),
        headers={"Content-Type": "text/plain; charset=utf-8"},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        return WitnessAnswer(response.status, response.content_type, (await response.read()).decode("utf-8", "replace"))


async def fetch_latest(url: str, origin: str, timeout: float = 10.0) -> str | None:
    """The latest checkpoint the witness at `url` cosigned for `origin` (`GET /checkpoint`), or None."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{url.rstrip('/')}/checkpoint?origin={quote(origin, safe='')}",
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response,
    ):
        if response.status == 404:
            return None
        response.raise_for_status()
        return (await response.read()).decode("utf-8")
