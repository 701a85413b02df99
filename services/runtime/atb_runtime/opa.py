"""A small OPA REST client over one reused aiohttp session.

Connection reuse matters: the decision path calls OPA per request, and a fresh
TCP connection per call costs more than the evaluation (docs/architecture.md §7.2).
Any failure to get a decision is a `PolicyUnavailableError`: callers fail closed
on it.
"""

from __future__ import annotations

import aiohttp
import orjson
from pydantic import JsonValue

from atb_runtime.eos import TransientError

__all__ = ["OpaClient", "PolicyUnavailableError"]


_JSON = {"Content-Type": "application/json"}


class PolicyUnavailableError(TransientError):
    """OPA could not be asked, or gave no decision. Callers must deny."""


class OpaClient:
    def __init__(self, base_url: str, *, timeout_s: float = 2.0) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def evaluate(self, path: str, input_doc: dict[str, JsonValue]) -> JsonValue:
        """POST /v1/data/<path>; return `result`, or raise when it is absent or OPA is down."""
        session = await self._get_session()
        url = f"{self._base}/v1/data/{path.strip('/')}"
        try:
            payload = orjson.dumps({"input": input_doc})
            async with session.post(url, data=payload, headers=_JSON) as response:
                if response.status != 200:
                    raise PolicyUnavailableError(f"OPA answered {response.status} for {path}")
                body = orjson.loads(await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise PolicyUnavailableError(f"OPA unreachable at {self._base}: {exc}") from exc
        except orjson.JSONDecodeError as exc:
            raise PolicyUnavailableError(f"OPA answered {path} with something that is not JSON") from exc
        if not isinstance(body, dict) or "result" not in body:
            raise PolicyUnavailableError(f"OPA has no decision for {path} (undefined)")
        result: JsonValue = body["result"]
        return result
