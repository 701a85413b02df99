"""`ServiceStack(instances=N)` and `atb dev up --instances`: N processes of each service that scales out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atb.cli import app
from atb.dev.stack import SCALABLE, ServiceStack, StackConfig


def _stack(tmp_path: Path, instances: int) -> ServiceStack:
    return ServiceStack(StackConfig("127.0.0.1:1", "http://127.0.0.1:1", tmp_path), instances=instances)


def test_each_scalable_service_gets_its_instances_and_the_gateway_stays_single(tmp_path: Path) -> None:
    stack = _stack(tmp_path, 3)
    for name in SCALABLE:
        assert stack.instances[name] == [name, f"{name}-i1", f"{name}-i2"]
    assert stack.instances["gateway"] == ["gateway"]
    assert len(stack.processes) == 1 + 3 * len(SCALABLE)
    # Every instance has its own ops port and, for brokers, its own HTTPS port.
    assert len(set(stack.ops_ports.values())) == len(stack.processes)
    assert len(set(stack.broker_ports.values())) == 3
    envs = {name: proc.env or {} for name, proc in stack.processes.items()}
    assert {envs[n]["ATB_INSTANCE"] for n in stack.instances["issuer"]} == {"0", "i1", "i2"}
    assert {envs[n]["ATB_TOPIC_NAMESPACE"] for n in stack.processes} == {""}
    asyncio.run(stack.stop())  # releases the ports it held


def test_instances_below_one_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _stack(tmp_path, 0)


def test_instances_without_services_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATB_KAFKA_PORT", "not-a-port")  # refused before anything starts
    result = CliRunner().invoke(app, ["dev", "up", "--instances", "0"])
    assert result.exit_code == 2
