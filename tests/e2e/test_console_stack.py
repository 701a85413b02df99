"""`ServiceStack` runs the console like every other service (opt-in, `services=(..., "console")`).

The stack passes the console its port (a socket it holds), the relying party id and origin
a local browser uses, and the audit store for the compliance view; the process is ready
once its /healthz names the console site. The browser flows themselves are in
test_console.py.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from atb.dev.stack import ServiceStack, StackConfig


async def test_the_stack_runs_the_console_on_the_port_and_origin_it_chose(
    kafka_bootstrap: str, opa_url: str, namespace: str, tmp_path: Path
) -> None:
    config = StackConfig(
        kafka_bootstrap, opa_url, tmp_path, namespace=namespace, audit_db_url=f"sqlite:///{tmp_path / 'audit.db'}"
    )
    stack = ServiceStack(config, services=("audit-sink", "console"))
    assert stack.console_url == f"http://localhost:{stack.console_port}"
    await stack.start(ready_timeout=90)
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{stack.console_url}/signin") as response:
            assert response.status == 200
            assert "text/html" in response.headers["Content-Type"]
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            assert "passkey" in (await response.text()).lower()
    finally:
        await stack.stop()
