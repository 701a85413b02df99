"""The local launcher (`atb dev`) and its process supervisor, for real.

The CLI is run as a subprocess (`python -m atb.dev`), as a user runs it, against a
private instance: its own state folder and free ports, so the shared stack of the
test session (and of `make test`) is never disturbed. Jars and the OPA binary come
from the shared cache, so only the first run on a machine pays for building them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from atb.dev import DevConfig, ManagedProcess, ProcessStartError, ensure_topics
from atb.dev.ports import port_free
from atb.dev.topics import admin_client, catalogue_names
from contracts.topics import CATALOGUE, Topic, spec_for, topic_name
from tests.waits import until

CLI_TIMEOUT_S = 300.0  # a cold first run resolves jars and builds OPA
WARM_UP_LIMIT_S = 10.0  # measured ~0.5 s; generous for a loaded 2-core CI machine


# -- helpers ------------------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass(frozen=True)
class Instance:
    """A private launcher instance: environment for the CLI and where its files are."""

    env: dict[str, str]
    config: DevConfig

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "atb.dev", *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
            check=False,
        )

    def pidfile(self, component: str) -> Path:
        return self.config.state_dir / component / f"{component}.pid"

    def pid(self, component: str) -> int:
        return int(json.loads(self.pidfile(component).read_text())["pid"])


def _make_instance(state_dir: Path, cache_dir: Path | None = None, path: str | None = None) -> Instance:
    kafka, controller, opa = _free_ports(3)
    env = {
        **os.environ,
        "ATB_STATE_DIR": str(state_dir),
        "ATB_KAFKA_PORT": str(kafka),
        "ATB_KAFKA_CONTROLLER_PORT": str(controller),
        "ATB_OPA_PORT": str(opa),
    }
    if cache_dir is not None:
        env["ATB_CACHE_DIR"] = str(cache_dir)
    if path is not None:
        env["PATH"] = path
    return Instance(env, DevConfig.from_env(env))


def _kill_leftovers(inst: Instance) -> None:
    """Safety net after a failed test: SIGKILL whatever the instance's pidfiles still own."""
    for component in ("kafka", "opa"):
        ManagedProcess(component, ["?"], None, Path(os.devnull), inst.pidfile(component)).kill()


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Callable[..., Instance]]:
    """Makes throw-away instances (own state folder and ports); anything they left running is killed."""
    made: list[Instance] = []

    def make(cache_dir: Path | None = None, path: str | None = None) -> Instance:
        made.append(_make_instance(tmp_path / f"state{len(made)}", cache_dir, path))
        return made[-1]

    yield make
    for inst in made:
        _kill_leftovers(inst)


def _alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _wait_dead(pid: int, within: float = 15.0) -> bool:
    """Wait for the exit itself: a pidfd turns readable when its process exits. False if it still runs."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], within)
    finally:
        os.close(fd)
    return bool(readable)


@pytest.fixture
def foreign_process() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated long-running process: stale pidfiles will point at it; it must survive."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    proc.kill()
    proc.wait()


def _write_stale_pidfile(path: Path, pid: int) -> None:
    """A pidfile whose pid is alive but is not the process we recorded (pid reuse after a crash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmdline = ["/usr/bin/java", "-cp", "x", "kafka.Kafka", "server.properties"]
    path.write_text(json.dumps({"pid": pid, "start_ticks": 1, "cmdline": cmdline, "argv": cmdline}))


# -- missing toolchain ---------------------------------------------------------------------------


def _bin_dir_with(tmp_path: Path, tools: list[str]) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        real = shutil.which(tool)
        assert real, f"{tool} must be installed for this test"
        (bin_dir / tool).symlink_to(real)
    return str(bin_dir)


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ([], ["java", "mvn", "go"]),
        (["java"], ["mvn", "go"]),
        (["java", "mvn"], ["go"]),
    ],
)
def test_missing_toolchain_is_one_line_naming_what_to_install(
    tmp_path: Path, scratch: Callable[..., Instance], present: list[str], missing: list[str]
) -> None:
    hints = {"java": "install OpenJDK 17+", "mvn": "install Apache Maven", "go": "install Go"}
    inst = scratch(tmp_path / "empty-cache", path=_bin_dir_with(tmp_path, present))

    result = inst.cli("up")

    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for tool in missing:
        assert f"{tool} not found: {hints[tool]}" in lines[0]
    for tool in present:
        assert f"{tool} not found" not in lines[0]
    if "java" in missing:
        assert "java not found: install OpenJDK 17+ (apt-get install openjdk-17-jre-headless)" in lines[0]
    assert not inst.pidfile("kafka").exists()
    assert not inst.pidfile("opa").exists()


def test_warm_caches_need_neither_maven_nor_go(tmp_path: Path, scratch: Callable[..., Instance]) -> None:
    """With the jars resolved and OPA built, `tools` needs nothing on PATH at all."""
    assert scratch().cli("tools").returncode == 0  # warms the shared cache if this is the first run

    result = scratch(path=_bin_dir_with(tmp_path, [])).cli("tools")

    assert result.returncode == 0, result.stderr
    assert "kafka jars:" in result.stdout
    assert "opa:" in result.stdout


# -- a port taken by someone else ------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["ATB_KAFKA_PORT", "ATB_KAFKA_CONTROLLER_PORT", "ATB_OPA_PORT"])
def test_port_taken_by_a_foreign_listener_fails_fast(scratch: Callable[..., Instance], variable: str) -> None:
    inst = scratch()
    port = int(inst.env[variable])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()

        began = time.monotonic()
        result = inst.cli("up")
        elapsed = time.monotonic() - began

    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {port}" in lines[0]
    assert variable in lines[0]
    assert elapsed < 20, f"took {elapsed:.1f}s: should fail before building or starting anything"
    assert not inst.pidfile("kafka").exists(), "nothing may start while a port is taken"
    assert not inst.pidfile("opa").exists()


def test_a_port_setting_that_is_no_port_is_one_line(scratch: Callable[..., Instance]) -> None:
    inst = scratch()

    result = inst.cli("up", env={**inst.env, "ATB_OPA_PORT": "80a"})

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["atb dev: error: ATB_OPA_PORT='80a' is not a TCP port (1-65535)"]


# -- the life of a private instance ------------------------------------------------------------------


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    inst = _make_instance(tmp_path_factory.mktemp("dev-instance") / "state")
    yield inst
    inst.cli("down")
    _kill_leftovers(inst)  # should `down` itself be broken


@pytest.fixture
def running(instance: Instance) -> Instance:
    """The private instance, brought up if an earlier test did not leave it up."""
    result = instance.cli("up")
    assert result.returncode == 0, result.stderr
    return instance


@pytest.mark.kafka
@pytest.mark.opa
def test_up_starts_both_despite_stale_pidfiles(instance: Instance, foreign_process: subprocess.Popen[bytes]) -> None:
    assert instance.cli("down").returncode == 0  # in case another test brought it up first
    _write_stale_pidfile(instance.pidfile("kafka"), foreign_process.pid)
    instance.pidfile("opa").parent.mkdir(parents=True, exist_ok=True)
    instance.pidfile("opa").write_text("{half a json")  # a crash in the middle of writing

    result = instance.cli("up")

    assert result.returncode == 0, result.stderr
    assert f"KAFKA_BOOTSTRAP_SERVERS={instance.config.kafka_bootstrap}" in result.stdout
    assert f"ATB_OPA_URL={instance.config.opa_url}" in result.stdout
    assert foreign_process.poll() is None, "the process behind a stale pidfile must not be signalled"
    for component in ("kafka", "opa"):
        pid = instance.pid(component)
        assert pid != foreign_process.pid
        assert _alive(pid)
    assert not port_free(instance.config.kafka_port)
    assert not port_free(instance.config.opa_port)


@pytest.mark.kafka
@pytest.mark.opa
def test_up_again_is_fast_and_changes_nothing(running: Instance) -> None:
    instance = running
    before = {c: instance.pid(c) for c in ("kafka", "opa")}

    began = time.monotonic()
    result = instance.cli("up")
    elapsed = time.monotonic() - began

    assert result.returncode == 0, result.stderr
    assert "already running" in result.stderr
    assert {c: instance.pid(c) for c in ("kafka", "opa")} == before
    assert elapsed < WARM_UP_LIMIT_S, f"warm `up` took {elapsed:.1f}s"


@pytest.mark.kafka
@pytest.mark.opa
def test_status_shows_both_ready(running: Instance) -> None:
    instance = running
    result = instance.cli("status")

    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") >= 5}
    assert {"kafka", "opa"} <= rows.keys(), result.stdout
    for component in ("kafka", "opa"):
        assert str(instance.pid(component)) in rows[component]
        assert "ready" in rows[component], rows[component]
        assert "not ready" not in rows[component], rows[component]
    assert str(instance.config.kafka_port) in rows["kafka"]
    assert str(instance.config.opa_port) in rows["opa"]


async def _topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    async with admin_client(bootstrap) as admin:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names])
    return {
        res["resource_name"]: {e["config_names"]: e["config_value"] for e in res["config_entries"]}
        for response in responses
        for res in response.to_object()["resources"]
    }


async def _partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    async with admin_client(bootstrap) as admin:
        topics = await admin.describe_topics(names)
    return {t["topic"]: len(t["partitions"]) for t in topics if t["error_code"] == 0}


async def _assert_catalogue(bootstrap: str, namespace: str) -> None:
    names = catalogue_names(namespace)
    assert await _partition_counts(bootstrap, list(names)) == {n: s.partitions for n, s in names.items()}
    configs = await _topic_configs(bootstrap, list(names))
    for name, spec in names.items():
        for key, value in spec.configs().items():
            assert configs[name][key] == value, (name, key)
    assert configs[topic_name(Topic.KEYS, namespace)]["cleanup.policy"] == "compact"
    assert configs[topic_name(Topic.AUDIT, namespace)]["cleanup.policy"] == "delete"


@pytest.mark.kafka
@pytest.mark.opa
async def test_up_created_the_catalogue_topics(running: Instance) -> None:
    instance = running
    await _assert_catalogue(instance.config.kafka_bootstrap, "")


@pytest.mark.kafka
@pytest.mark.opa
async def test_up_restores_a_drifted_topic(running: Instance) -> None:
    instance = running
    bootstrap = instance.config.kafka_bootstrap
    keys = topic_name(Topic.KEYS)
    async with admin_client(bootstrap) as admin:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, keys, {"cleanup.policy": "delete"})])
    # The change is committed to the metadata log; the broker's view of it may follow a moment later.
    await until(
        lambda: _topic_configs(bootstrap, [keys]),
        lambda configs: configs[keys]["cleanup.policy"] == "delete",
        timeout=30,
        what=f"{keys} drifted to cleanup.policy=delete",
    )

    result = await asyncio.to_thread(instance.cli, "up")

    assert result.returncode == 0, result.stderr
    await until(
        lambda: _topic_configs(bootstrap, [keys]),
        lambda configs: configs[keys]["cleanup.policy"] == "compact",
        timeout=30,
        what=f"{keys} restored to cleanup.policy=compact by `up`",
    )


@pytest.mark.kafka
@pytest.mark.opa
def test_up_after_a_killed_run(running: Instance) -> None:
    instance = running
    """SIGKILL both (a crash, an OOM kill, a closed laptop lid): the next `up` just works."""
    old = {c: instance.pid(c) for c in ("kafka", "opa")}
    for pid in old.values():
        os.killpg(pid, signal.SIGKILL)
    assert all(_wait_dead(pid) for pid in old.values())

    result = instance.cli("up")

    assert result.returncode == 0, result.stderr
    for component in ("kafka", "opa"):
        assert instance.pid(component) != old[component]
        assert _alive(instance.pid(component))
    assert "ready" in instance.cli("status").stdout


def test_down_spares_the_process_behind_a_stale_pidfile(
    scratch: Callable[..., Instance], foreign_process: subprocess.Popen[bytes]
) -> None:
    inst = scratch()
    _write_stale_pidfile(inst.pidfile("kafka"), foreign_process.pid)

    result = inst.cli("down")

    assert result.returncode == 0, result.stderr
    assert "nothing was running" in result.stderr
    assert foreign_process.poll() is None
    assert not inst.pidfile("kafka").exists(), "a stale pidfile is removed"


@pytest.mark.kafka
@pytest.mark.opa
def test_down_leaves_nothing_running(running: Instance) -> None:
    instance = running
    pids = {c: instance.pid(c) for c in ("kafka", "opa")}

    result = instance.cli("down")

    assert result.returncode == 0, result.stderr
    for component, pid in pids.items():
        assert _wait_dead(pid, within=1.0), f"{component} (pid {pid}) still running after down"
        assert not instance.pidfile(component).exists()
    assert port_free(instance.config.kafka_port)
    assert port_free(instance.config.controller_port)
    assert port_free(instance.config.opa_port)
    status = instance.cli("status")
    assert status.stdout.count("stopped") == 2, status.stdout
    again = instance.cli("down")
    assert again.returncode == 0
    assert "nothing was running" in again.stderr


# -- the shared instance and the fixtures ----------------------------------------------------------------


async def test_namespace_fixture_holds_the_whole_catalogue(kafka_bootstrap: str, namespace: str) -> None:
    assert namespace.startswith("t")
    assert namespace.endswith(".")
    assert len(namespace) == 10
    await _assert_catalogue(kafka_bootstrap, namespace)


async def test_topics_can_be_deleted_and_ensured_again(kafka_bootstrap: str) -> None:
    from atb.dev import delete_topics

    ns = "tlauncher-roundtrip."
    await ensure_topics(kafka_bootstrap, ns)
    await ensure_topics(kafka_bootstrap, ns)  # idempotent
    await delete_topics(kafka_bootstrap, ns)
    assert await _partition_counts(kafka_bootstrap, list(catalogue_names(ns))) == {}
    await delete_topics(kafka_bootstrap, ns)  # deleting what is gone is fine


def test_catalogue_compacts_only_the_keys_and_changelog_topics() -> None:
    compacted = {spec.topic for spec in CATALOGUE if spec.compacted}
    assert compacted == {Topic.KEYS, Topic.APPROVALS_STATE}
    assert spec_for(Topic.KEYS).configs()["cleanup.policy"] == "compact"


# -- ManagedProcess on its own ---------------------------------------------------------------------


def _http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]


async def _port_answers(port: int) -> bool:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await writer.wait_closed()
    return True


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ManagedProcess]:
    (port,) = _free_ports(1)
    proc = ManagedProcess(
        "http",
        _http_server(port),
        None,
        tmp_path / "http.log",
        tmp_path / "http.pid",
        ready=lambda: _port_answers(port),
        cwd=tmp_path,
    )
    yield proc
    await proc.stop(timeout=2)


async def test_managed_process_starts_once_and_stops(served: ManagedProcess) -> None:
    assert await served.start(ready_timeout=30) is True
    pid = served.pid
    assert pid is not None
    assert served.is_running()
    assert await served.start(ready_timeout=30) is False
    assert served.pid == pid

    assert await served.stop(timeout=5) is True
    assert not served.is_running()
    assert served.pid is None
    assert not served.pid_path.exists()
    assert await served.stop(timeout=5) is False
    assert served.log_path.read_text().startswith("=== ")


async def test_managed_process_kill_is_noticed(served: ManagedProcess) -> None:
    await served.start(ready_timeout=30)
    pid = served.pid
    assert pid is not None
    assert served.kill() is True
    assert await asyncio.to_thread(_wait_dead, pid)
    assert not served.is_running()
    assert served.kill() is False


async def test_managed_process_escalates_to_sigkill(tmp_path: Path) -> None:
    # The child's own sleep is its whole life: it runs until the launcher has to SIGKILL it.
    stubborn = "import signal as s, time; s.signal(s.SIGTERM, s.SIG_IGN); print('armed', flush=True); time.sleep(600)"
    log = tmp_path / "s.log"

    async def armed() -> bool:  # SIGTERM is ignored only from here on
        return "armed" in log.read_text().splitlines()  # a line of its own: the header line quotes the argv

    proc = ManagedProcess("stubborn", [sys.executable, "-c", stubborn], None, log, tmp_path / "s.pid", armed)
    await proc.start()
    pid = proc.pid
    assert pid is not None

    began = time.monotonic()
    assert await proc.stop(timeout=0.5) is True

    assert 0.5 <= time.monotonic() - began < 10
    assert not _alive(pid)


async def test_managed_process_that_dies_while_starting_names_its_log(tmp_path: Path) -> None:
    crash = "import sys; print('cannot bind: address in use', flush=True); sys.exit(3)"

    async def never() -> bool:
        await asyncio.sleep(0.05)  # a check still in flight when the process exits: its duration is the subject
        return False

    proc = ManagedProcess("crasher", [sys.executable, "-c", crash], None, tmp_path / "c.log", tmp_path / "c.pid", never)

    with pytest.raises(ProcessStartError, match="crasher exited while starting") as info:
        await proc.start(ready_timeout=30)

    assert str(tmp_path / "c.log") in str(info.value)
    assert "cannot bind: address in use" in str(info.value)
    assert not proc.pid_path.exists()


async def test_managed_process_not_ready_in_time_is_killed(tmp_path: Path) -> None:
    async def never() -> bool:
        return False

    proc = ManagedProcess("sleepy", ["sleep", "600"], None, tmp_path / "z.log", tmp_path / "z.pid", never)

    with pytest.raises(ProcessStartError, match=r"sleepy \(pid \d+\) not ready after 1s") as info:
        await proc.start(ready_timeout=1)

    killed = re.search(r"\(pid (\d+)\)", str(info.value))
    assert killed is not None
    assert await asyncio.to_thread(_wait_dead, int(killed.group(1)))
    assert not proc.is_running()


async def test_managed_process_argv_change_restarts(tmp_path: Path) -> None:
    first = ManagedProcess("s", ["sleep", "600"], None, tmp_path / "s.log", tmp_path / "s.pid")
    second = ManagedProcess("s", ["sleep", "601"], None, tmp_path / "s.log", tmp_path / "s.pid")
    await first.start()
    old = first.pid
    assert old is not None

    assert await second.start() is True

    assert second.pid not in (None, old)
    assert await asyncio.to_thread(_wait_dead, old)
    await second.stop(timeout=2)
