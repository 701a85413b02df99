"""The Helm chart, run without Kubernetes: every pod's containers as local processes.

The chart is rendered by the pinned Helm (identity from Secrets, the audit store and the broker's
spent store on PostgreSQL, one replica each) and, for every service's pod, rebuilt here from the
rendered manifests and the root Dockerfile (the image as tests/e2e/test_compose_equivalence.py
builds it):

* the volumes: each emptyDir a folder; each ConfigMap volume a folder laid out as the kubelet
  does (`..data` and symlinks), from the rendered ConfigMap; each Secret and projected volume the
  files an operator creates (the dev PKI's SVIDs and bundle, the issuer's signing key, the audit
  checkpoint key, the Slack signing secret) under the keys and paths the chart names;
* the containers: the main container with exactly the rendered env (secretKeyRef values from those
  Secrets) and its command (the decision-log receiver runs the image's `atb` command), init
  containers run first, and the OPA sidecar as a real OPA with the sidecar's own arguments over the
  ConfigMap policy folder and its configuration file (decision logs to the receiver's Service);
* the cluster's names: the Kafka bootstrap, the PostgreSQL host and the in-cluster Service names
  become the session's Kafka, PostgreSQL and the services' local ports.

Each process must answer its probes (/healthz on the ops port) and a low-, a medium- and a
high-risk request then go from the gateway through votes to the broker's allow and the audit store;
the OPA sidecars' decisions reach the audit store through the receiver pod, and the console pod
serves its sign-in page.
What it does not prove: the kubelet and the API server (scheduling, the native sidecar ordering,
the security contexts enforced, the CSI driver and spiffe-helper), nor replicas.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import sysconfig
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import yaml  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from atb.dev.config import DevConfig
from atb.dev.gotools import build_helm
from atb.dev.ports import PortAllocator
from atb.dev.postgres import TempPostgres
from atb.dev.procs import ManagedProcess
from atb.dev.stack import healthz_ready
from atb.dev.toolchain import build_opa
from atb.dev.topics import delete_topics
from atb.policy.decision_logs import DECISION_AUDIT_TYPE
from atb.sdk import ApproverClient, BrokerClient, GatewayClient
from atb_identity import bundle_path, ensure_svid, init_ca, issue_svid
from atb_runtime.ops import LISTEN_FDS_ENV
from audit_sink.adapters.db import audit_events, make_engine
from contracts import BrokerDecision, Decision, IssuanceRequested, JsonObject, Leg, PoaIssued, VoteChoice
from tests.e2e.audit_sync import caught_up, request_rows
from tests.e2e.test_compose_equivalence import (
    AGENT,
    CONSOLE,
    HIGH_LEG,
    LOW_LEG,
    MEDIUM_LEG,
    SITE,
    Container,
    _decision_logs,
    build_image,
    http_ok,
    parse_dockerfile,
)

pytestmark = [pytest.mark.kafka, pytest.mark.opa, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "atb"
SERVICES = ("gateway", "approvals", "issuer", "broker", "chat", "console", "audit-sink", "policy-decision-logs")
"""Every workload of the default values: the services and OPA's decision-log receiver."""
KAFKA_HOST = "kafka.cluster.test:9092"
PG_HOST = "postgres.cluster.test"


def render(helm: Path, namespace: str, pg_port: int) -> list[dict[str, Any]]:
    config = {
        name: json.loads((REPO / "config" / f"{name}.json").read_text())
        for name in ("agents", "approvers", "connectors")
    }
    values: dict[str, Any] = {
        "identity.mode": "secret",
        "kafka.bootstrapServers": KAFKA_HOST,
        "kafka.topicNamespace": namespace,
        "kafka.topicsJob.enabled": True,
        "gateway.replicas": 1,
        "approvals.replicas": 1,
        "issuer.replicas": 1,
        "broker.replicas": 1,
        "auditSink.replicas": 1,
        "postgres.audit.host": PG_HOST,
        "postgres.audit.port": pg_port,
        "postgres.audit.sslmode": "disable",
        "postgres.spent.host": PG_HOST,
        "postgres.spent.port": pg_port,
        "postgres.spent.sslmode": "disable",
        **{f"config.{name}": doc for name, doc in config.items()},
    }
    args = [a for k, v in values.items() for a in ("--set-json", f"{k}={json.dumps(v)}")]
    done = subprocess.run(
        [str(helm), "template", "atb", str(CHART), "--namespace", "atb", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


# --- the operator's Secrets ----------------------------------------------------------------------


def _ed25519_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def operator_secrets(values: Mapping[str, Any], state: Path) -> dict[str, dict[str, bytes]]:
    """The Secrets the chart's README tells an operator to create, by name and key (dev PKI SVIDs)."""
    init_ca(state, "atb.local")
    made: dict[str, dict[str, bytes]] = {
        values["identity"]["secret"]["trustBundleSecretName"]: {"bundle.pem": bundle_path(state).read_bytes()}
    }
    for service in ("gateway", "approvals", "issuer", "broker", "chat", "console", "policy-decision-logs"):
        svid = issue_svid(state, f"spiffe://atb.local/svc/{service}")
        assert svid.cert_path is not None
        assert svid.key_path is not None
        made[values["identity"]["secret"]["svidSecretName"] % service] = {
            "chain.pem": svid.cert_path.read_bytes(),
            "key.pem": svid.key_path.read_bytes(),
        }
    made[values["issuer"]["signingKeySecret"]] = {"signing-key.pem": _ed25519_pem()}
    made[values["auditSink"]["checkpointKeySecret"]] = {"checkpoint-key.pem": _ed25519_pem()}
    made[values["chat"]["slack"]["secretName"]] = {"signing-secret": secrets.token_hex(32).encode()}
    for store in ("audit", "spent"):
        ref = values["postgres"][store]["passwordSecret"]
        made.setdefault(ref["name"], {})[ref["key"]] = secrets.token_hex(16).encode()
    return made


def create_databases(values: Mapping[str, Any], server: TempPostgres, made: Mapping[str, Mapping[str, bytes]]) -> None:
    """What the DBA does before the install: each store's database and login role with its password."""
    with psycopg.connect(server.url(None, driver=False), autocommit=True) as conn:
        for store in ("audit", "spent"):
            spec = values["postgres"][store]
            ref = spec["passwordSecret"]
            password = made[ref["name"]][ref["key"]].decode()
            conn.execute(f'DROP DATABASE IF EXISTS "{spec["database"]}" WITH (FORCE)')
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (spec["user"],)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(f"{verb} ROLE \"{spec['user']}\" LOGIN PASSWORD '{password}'")
            conn.execute(f'CREATE DATABASE "{spec["database"]}" OWNER "{spec["user"]}"')


# --- a pod as local folders and processes ----------------------------------------------------------


def kubelet_volume(folder: Path, files: Mapping[str, bytes], mode: int) -> Path:
    """A ConfigMap/Secret volume as the kubelet lays it out: `..data` -> a timestamped folder, symlinks."""
    stamp = folder / "..2026_01_01_00_00_00.000000000"
    for relative, data in files.items():
        target = stamp / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode)
    (folder / "..data").symlink_to(stamp.name)
    for relative in {r.split("/")[0] for r in files}:
        (folder / relative).symlink_to(f"..data/{relative}")
    return folder


def pod_volumes(
    pod: Mapping[str, Any], docs: list[dict[str, Any]], made: Mapping[str, Mapping[str, bytes]], root: Path
) -> dict[str, Path]:
    """Volume name -> folder here, with the files the kubelet would project into it."""
    configmaps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
    out: dict[str, Path] = {}
    for volume in pod["volumes"]:
        name = volume["name"]
        folder = root / name
        folder.mkdir(parents=True)
        if "emptyDir" in volume or "persistentVolumeClaim" in volume:  # a claim: an empty volume at first
            out[name] = folder
        elif "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]["data"]
            out[name] = kubelet_volume(folder, {k: v.encode() for k, v in data.items()}, 0o644)
        elif "secret" in volume:
            spec = volume["secret"]
            if spec["secretName"] not in made and spec.get("optional"):
                out[name] = folder  # the kubelet mounts an optional secret that does not exist as an empty folder
                continue
            secret = made[spec["secretName"]]
            items = spec.get("items") or [{"key": k, "path": k} for k in secret]
            out[name] = kubelet_volume(folder, {i["path"]: secret[i["key"]] for i in items}, 0o440)
        elif "projected" in volume:
            files: dict[str, bytes] = {}
            for source in volume["projected"]["sources"]:
                secret = made[source["secret"]["name"]]
                for item in source["secret"]["items"]:
                    files[item["path"]] = secret[item["key"]]
            out[name] = kubelet_volume(folder, files, 0o440)
        else:
            raise AssertionError(f"volume {name}: a kind this test cannot lay out: {sorted(volume)}")
    return out


def mounts_of(container: Mapping[str, Any], volumes: Mapping[str, Path]) -> dict[str, Path]:
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        assert mount["name"] in volumes, f"{container['name']} mounts {mount['name']}, which the pod lacks"
        host = volumes[mount["name"]]
        if sub := mount.get("subPath"):
            host = host / sub
            host.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = host
    return mounts


def container_env(container: Mapping[str, Any], made: Mapping[str, Mapping[str, bytes]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            secret = made.get(ref["name"], {})
            if ref["key"] not in secret:
                assert ref.get("optional"), f"{entry['name']}: Secret {ref['name']} has no key {ref['key']}"
                continue
            env[entry["name"]] = secret[ref["key"]].decode().strip()
        else:
            env[entry["name"]] = str(entry.get("value", ""))
    return env


@dataclass
class Pod:
    service: str
    container: Container
    ports: dict[str, int]
    """Site -> local port (ops, gateway, broker, chat)."""
    opa: ManagedProcess | None
    process: ManagedProcess | None = None


@dataclass
class Stack:
    pods: dict[str, Pod]
    state: Path
    bundle: Path
    audit_url: str
    namespace: str
    kafka: str


def map_hosts(value: str, hosts: Mapping[str, str]) -> str:
    for host, local in hosts.items():
        value = re.sub(rf"(?<![\w.-]){re.escape(host)}(?!\d)", local, value)
    return value


@pytest.fixture
async def helm_stack(
    kafka_bootstrap: str, opa_url: str, postgres_server: TempPostgres, tmp_path: Path
) -> AsyncIterator[Stack]:
    config = DevConfig.from_env()
    helm = await build_helm(config)
    opa_bin = await build_opa(config)
    namespace = f"h{secrets.token_hex(4)}."
    docs = render(helm, namespace, postgres_server.port)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    state = tmp_path / "operator"
    made = operator_secrets(values, state)
    create_databases(values, postgres_server, made)
    await run_topics_job(docs, {KAFKA_HOST: kafka_bootstrap}, tmp_path)
    ports = PortAllocator()
    workloads = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    assert sorted(workloads) == sorted(SERVICES)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    pods: dict[str, Pod] = {}
    hosts: dict[str, str] = {KAFKA_HOST: kafka_bootstrap, PG_HOST: postgres_server.host}
    sidecars: list[tuple[str, dict[str, Any], dict[str, Path], Container]] = []
    for service, workload in workloads.items():
        pod = workload["spec"]["template"]["spec"]
        main = pod["containers"][0]
        image = main["image"].rsplit("/", 1)[-1].split(":")[0]  # atb/<SERVICE>:<tag>
        stages = parse_dockerfile({"SERVICE": image})
        root = tmp_path / "images" / service
        build_image(stages, root)
        volumes = pod_volumes(pod, docs, made, tmp_path / "pods" / service)
        local_ports = {p["name"]: ports.allocate() for p in main["ports"]}
        sites = {("ops" if name == "ops" else service): port for name, port in local_ports.items()}
        env = {**stages[""].env, **container_env(main, made)}
        argv = list(main.get("command") or stages[""].cmd)
        container = Container(service, root, mounts_of(main, volumes), stages[""], env, argv)
        # The pod's Service answers on the container's ports: `<service name>:<port>` -> local port.
        for svc in services.values():
            if (
                svc["spec"].get("clusterIP") == "None"
                or svc["spec"]["selector"] != workload["spec"]["selector"]["matchLabels"]
            ):
                continue
            for port in svc["spec"]["ports"]:
                hosts[f"{svc['metadata']['name']}:{port['port']}"] = f"127.0.0.1:{local_ports[port['targetPort']]}"
        for init in pod.get("initContainers", []):
            if init["name"] == "opa":
                sidecars.append((service, init, mounts_of(init, volumes), container))
            else:
                run_init(init, Container(service, root, mounts_of(init, volumes), stages[""], {}, []))
        pods[service] = Pod(service, container, sites, None)
    # Every Service is known now: the sidecars' configuration files name the receiver's.
    for service, init, mounts, container in sidecars:
        opa, local_api = opa_sidecar(service, init, mounts, opa_bin, tmp_path / "logs", hosts)
        in_pod = next(a for a in init["args"] if a.startswith("--addr=")).removeprefix("--addr=")
        assert container.env["ATB_OPA_URL"] == f"http://{in_pod}", "the service asks its own sidecar"
        container.env["ATB_OPA_URL"] = f"http://127.0.0.1:{local_api}"
        pods[service].opa = opa
    for pod_ in pods.values():
        c = pod_.container
        local: dict[str, str] = {}
        for key, value in c.env.items():
            if key == "ATB_OPS_PORT":
                value = str(pod_.ports["ops"])
            elif key in ("ATB_GATEWAY_PORT", "ATB_BROKER_PORT", "ATB_CHAT_PORT", "ATB_CONSOLE_PORT"):
                value = str(pod_.ports[pod_.service])
            elif key.startswith("ATB_") and key.endswith("_HOST") and value == "0.0.0.0":  # noqa: S104
                value = "127.0.0.1"
            elif key == "PATH":
                value = f"{Path(sys.executable).parent}:/usr/bin:/bin"
            else:
                value = c.rewrite_paths(map_hosts(value, hosts))
            local[key] = value
        local["HOME"] = str(c.host_path(c.stage.home))
        local["PYTHONPATH"] = f"{c.root / SITE}:{sysconfig.get_paths()['purelib']}"
        local["ATB_EXIT_WITH_PARENT"] = str(os.getpid())
        leftover = [f"{k}={v}" for k, v in local.items() if re.search(r"cluster\.test|atb-[a-z-]+:\d+", v)]
        assert not leftover, f"{pod_.service}: still names a cluster host: {leftover}"
        argv = c.argv
        assert argv[0] in CONSOLE, argv
        sites = dict(pod_.ports)
        if argv[0] == "atb":  # the receiver: it binds its own --port (the ops port), no socket handed down
            argv = [c.rewrite_paths(a) for a in argv]
            argv = [a.replace("--host=0.0.0.0", "--host=127.0.0.1") for a in argv]
            argv = [f"--port={sites['ops']}" if a.startswith("--port=") else a for a in argv]
            ports.release(sites["ops"])
            held: tuple[int, ...] = ()

            def ready(url: str = f"http://127.0.0.1:{sites['ops']}/healthz") -> Any:
                return http_ok(url)
        else:
            held = ports.held(pod_.ports.values())
            local[LISTEN_FDS_ENV] = ",".join(map(str, held))

            def ready(pod_name: str = pod_.service, served: dict[str, int] = sites) -> Any:  # type: ignore[misc]
                process = pods[pod_name].process
                assert process is not None
                return healthz_ready(process, served)

        pod_.process = ManagedProcess(
            pod_.service,
            [*CONSOLE[argv[0]], *argv[1:]],
            local,
            log_path=tmp_path / "logs" / f"{pod_.service}.log",
            pid_path=tmp_path / "logs" / f"{pod_.service}.pid",
            ready=ready,
            cwd=c.host_path(c.stage.workdir),
            pass_fds=held,
        )
    sink = pods["audit-sink"].process
    assert sink is not None
    assert sink.env is not None
    audit_env = sink.env
    user = values["postgres"]["audit"]["user"]
    audit_url = audit_env["ATB_AUDIT_DB_URL"].replace(f"://{user}@", f"://{user}:{audit_env['PGPASSWORD']}@")
    opas = [p.opa for p in pods.values() if p.opa is not None]
    try:
        await asyncio.gather(*(o.start(ready_timeout=60) for o in opas))
        await asyncio.gather(*(p.process.start(ready_timeout=90) for p in pods.values() if p.process))
        yield Stack(pods, state, bundle_path(state), audit_url, namespace, kafka_bootstrap)
    finally:
        await asyncio.gather(*(p.process.stop() for p in pods.values() if p.process))
        await asyncio.gather(*(o.stop() for o in opas))
        ports.close()
        await delete_topics(kafka_bootstrap, namespace)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def opa_sidecar(
    service: str,
    spec: Mapping[str, Any],
    mounts: Mapping[str, Path],
    opa_bin: Path,
    logs: Path,
    hosts: Mapping[str, str],
) -> tuple[ManagedProcess, int]:
    """A real OPA with the sidecar's own arguments, its two listen addresses moved to free local
    ports, and its configuration file with the cluster's Service names mapped as DNS would; (process,
    policy API port). Ready when its startup probe's path answers 200."""
    api, diagnostic = _free_port(), _free_port()
    args: list[str] = []
    for arg in spec["args"]:
        if arg.startswith("--addr="):
            arg = f"--addr=127.0.0.1:{api}"
        elif arg.startswith("--diagnostic-addr="):
            arg = f"--diagnostic-addr=127.0.0.1:{diagnostic}"
        elif arg.startswith("--config-file="):
            path = arg.removeprefix("--config-file=")
            folder = next(p for p in sorted(mounts, key=len, reverse=True) if path.startswith(p.rstrip("/") + "/"))
            config = (mounts[folder] / path[len(folder) :].lstrip("/")).read_text()
            local = logs.parent / f"opa-{service}.yaml"
            local.write_text(map_hosts(config, hosts))
            arg = f"--config-file={local}"
        elif arg.startswith("/"):
            arg = str(mounts[arg])
        args.append(arg)
    probe = spec["startupProbe"]["httpGet"]
    health_port = next(p["containerPort"] for p in spec["ports"] if p["name"] == probe["port"])
    assert any(a == f"--diagnostic-addr=0.0.0.0:{health_port}" for a in spec["args"]), spec["args"]

    async def ready() -> bool:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{diagnostic}{probe['path']}") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    process = ManagedProcess(
        f"opa-{service}",
        [str(opa_bin), *args],
        {"PATH": "/usr/bin:/bin"},
        log_path=logs / f"opa-{service}.log",
        pid_path=logs / f"opa-{service}.pid",
        ready=ready,
    )
    return process, api


async def run_topics_job(docs: list[dict[str, Any]], hosts: Mapping[str, str], work: Path) -> None:
    """The pre-install hook Job that creates the topics, run from the broker image it names."""
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert "pre-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    (spec,) = job["spec"]["template"]["spec"]["containers"]
    assert spec["image"].split("/")[-1].startswith("broker:"), spec["image"]
    stages = parse_dockerfile({"SERVICE": "broker"})
    root = work / "images" / "topics-job"
    build_image(stages, root)
    env = {e["name"]: map_hosts(e["value"], hosts) for e in spec["env"]}
    env |= {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{root / SITE}:{sysconfig.get_paths()['purelib']}"}
    argv = spec["command"]
    assert argv[0] in CONSOLE, argv
    done = await asyncio.to_thread(
        subprocess.run,
        [*CONSOLE[argv[0]], *argv[1:]],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"the topics Job failed: {done.stderr[-2000:]}"


def run_init(spec: Mapping[str, Any], c: Container) -> None:
    """An init container's `/bin/sh -c` command, its paths mapped to the pod's folders."""
    command = [*spec.get("command", []), *spec.get("args", [])]
    assert command[:2] == ["/bin/sh", "-c"], f"init container {spec['name']}: {command}"
    done = subprocess.run(
        ["/bin/sh", "-c", c.rewrite_paths(command[2])], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, f"init container {spec['name']} failed: {done.stderr}"


def _stored_decision_logs(url: str) -> list[Any]:
    query = select(audit_events.c.event_id).where(audit_events.c.audit_type == DECISION_AUDIT_TYPE)
    with make_engine(url).connect() as conn:
        return list(conn.execute(query))


async def test_the_chart_pods_start_and_serve_low_medium_and_high_risk(helm_stack: Stack) -> None:
    stack = helm_stack
    gateway = stack.pods["gateway"].ports["gateway"]
    broker = stack.pods["broker"].ports["broker"]
    agent = ensure_svid(stack.state, AGENT)
    requests: list[tuple[str, str, str, Leg, JsonObject, list[str]]] = [
        ("low", "crm.contact.read", "crm:contact/1", LOW_LEG, {"f": ["name"]}, []),
        ("medium", "crm.contact.update", "crm:contact/2", MEDIUM_LEG, {}, ["carol"]),
        ("high", "sap.payment.execute", "sap:invoice/4711", HIGH_LEG, {"amount_cents": 120000}, ["alice", "bob"]),
    ]
    async with (
        GatewayClient(svid=agent, bundle_path=stack.bundle, base_url=f"https://127.0.0.1:{gateway}") as gw,
        BrokerClient(svid=agent, bundle_path=stack.bundle, base_url=f"https://127.0.0.1:{broker}") as br,
    ):
        for tier, action, resource, leg, params, approvers in requests:
            request_id = await gw.request_poa(action, resource, tenant="acme", leg=leg, params=params)
            for approver in approvers:
                svid = ensure_svid(stack.state, f"spiffe://atb.local/user/{approver}")
                async with ApproverClient(
                    svid=svid, bootstrap=stack.kafka, namespace=stack.namespace, bundle_path=stack.bundle
                ) as client:
                    required = await client.approval_required(request_id, timeout=60)
                    assert required.tier.value == tier
                    await client.vote(required, VoteChoice.APPROVE)
            issued = await gw.await_poa(request_id, timeout=60)
            assert issued.tier is not None
            assert issued.tier.value == tier
            assert issued.poa is not None
            decision = await br.authorize(
                action,
                resource,
                request_id=request_id,
                tenant="acme",
                poa=issued.poa.token,
                params=params,
                execute=False,
            )
            assert decision.decision is Decision.ALLOW, (tier, decision.reasons)
            for kind in (IssuanceRequested, PoaIssued, BrokerDecision):  # on Kafka, then stored by the sink
                rows = await request_rows(stack.kafka, stack.namespace, stack.audit_url, request_id, kind)
                assert rows, f"{tier}: the audit store holds no {kind.__name__} for {request_id}"
    # The OPA sidecars uploaded their decisions to the receiver pod, which wrote them to atb.audit,
    # and the audit sink stored them.
    paths = {"atb/poa/requirements", "atb/poa/decisions"}
    logged = await _decision_logs(stack.kafka, stack.namespace, None, paths)
    await caught_up(stack.kafka, stack.namespace, stack.audit_url)
    stored = {row.event_id for row in await asyncio.to_thread(_stored_decision_logs, stack.audit_url)}
    assert logged <= stored, "the audit store lacks decision-log events that are on atb.audit"
    # The console pod serves its sign-in page.
    console = stack.pods["console"].ports["console"]
    assert await http_ok(f"http://127.0.0.1:{console}/signin"), "the console does not serve its sign-in page"
    minted = [s for s, p in stack.pods.items() if p.container.host_path("/var/lib/atb/pki/ca").exists()]
    assert not minted, f"{minted} minted their own dev CA: their SVID did not reach them"
    # The audit sink signs with the operator's checkpoint key (copied by its init container).
    sink = stack.pods["audit-sink"].container
    assert sink.host_path("/var/lib/atb/audit/checkpoint.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY")
    assert all(p.process is not None and p.process.is_running() for p in stack.pods.values()), "a service died"
