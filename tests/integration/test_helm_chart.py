"""The Helm chart (deploy/helm/atb), rendered by the pinned Helm and checked offline.

Helm and the strict validator are built into `<cache>/bin` on first use (atb/dev/gotools.py; a
cold Helm build takes minutes, hence the longer timeout). Each values variant is rendered with
`helm template`, checked by `helm lint --strict` and by atb-kube-validate (strict decode into the
pinned k8s.io/api types), then read here:

* every workload: non-root, read-only root filesystem, no privilege escalation, all capabilities
  dropped, RuntimeDefault seccomp (every container, init and sidecars too), probes on /healthz of
  the ops port, requests and limits, a PodDisruptionBudget, the replicas asked for;
* every service container's ATB_* environment against the service's settings class: each variable
  is a setting of that service, every setting the image cannot default is set, and the settings
  load from it (with the SPIFFE IDs derived from the trust domain);
* the OPA sidecar exactly where a service asks policy, with the repository's policy; the Strimzi
  topics against contracts/topics.py.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import re
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic_settings import BaseSettings

from atb.dev.config import DevConfig
from atb.dev.gotools import build_chart_tools
from atb.dev.toolchain import OPA_VERSION, build_opa
from atb_runtime.settings import CommonSettings
from contracts.topics import CATALOGUE
from tests.waits import until as wait_until

pytestmark = [pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "atb"
STRIMZI = REPO / "deploy" / "helm" / "strimzi"
SERVICES = ("gateway", "approvals", "issuer", "broker", "chat", "console", "audit-sink")
RECEIVER = "policy-decision-logs"
"""OPA's decision-log receiver: the `atb` command of the broker image, not a service package."""
WORKLOADS = (*SERVICES, RECEIVER)
VALUES_KEY = {s: {"audit-sink": "auditSink", RECEIVER: "policyDecisionLogs"}.get(s, s) for s in WORKLOADS}
PACKAGE = {s: s.replace("-", "_") for s in SERVICES}
OPS = "ops"


@dataclass(frozen=True)
class Tools:
    helm: Path
    validator: Path


@pytest.fixture(scope="session")
async def tools() -> Tools:
    helm, validator = await build_chart_tools(DevConfig.from_env())
    return Tools(helm, validator)


@dataclass(frozen=True)
class Rendered:
    text: str
    docs: list[dict[str, Any]]

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] in kinds]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
        return found[0]

    def workload(self, service: str) -> dict[str, Any]:
        return next(
            d
            for d in self.of_kind("Deployment", "StatefulSet")
            if d["metadata"]["labels"]["app.kubernetes.io/component"] == service
        )


def helm_args(values: Mapping[str, Any] | None = None, files: tuple[Path, ...] = ()) -> list[str]:
    args: list[str] = []
    for file in files:
        args += ["-f", str(file)]
    for key, value in (values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    return args


_RENDERED: dict[str, Rendered] = {}


def render(tools: Tools, values: Mapping[str, Any] | None = None, files: tuple[Path, ...] = ()) -> Rendered:
    """`helm template` (lint --strict first) and the strict validator over the output; once per values."""
    args = helm_args(values, files)
    key = json.dumps(args)
    if key not in _RENDERED:
        _RENDERED[key] = _render(tools, args)
    return _RENDERED[key]


def _render(tools: Tools, args: list[str]) -> Rendered:
    lint = subprocess.run(
        [str(tools.helm), "lint", "--strict", str(CHART), *args], capture_output=True, text=True, timeout=120
    )
    assert lint.returncode == 0, f"helm lint --strict: {lint.stdout}{lint.stderr}"
    done = subprocess.run(
        [str(tools.helm), "template", "atb", str(CHART), "--namespace", "atb", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"helm template: {done.stderr}"
    # A PodDisruptionBudget switched off on purpose is a choice the practices would refuse.
    no_budget = any(a.endswith("pdb.enabled=false") for a in args)
    practices = ["-practices=false"] if no_budget else []
    checked = subprocess.run(
        [str(tools.validator), *practices, "-"], input=done.stdout, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, f"atb-kube-validate:\n{checked.stderr}"
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    return Rendered(done.stdout, docs)


VARIANTS: dict[str, tuple[dict[str, Any], tuple[Path, ...]]] = {
    "defaults": ({}, ()),
    "production": ({}, (CHART / "examples" / "values-production.yaml",)),
    "single-sqlite-secret-identity-hostpath": (
        {
            "identity.mode": "secret",
            "broker.replicas": 1,
            "auditSink.replicas": 1,
            "postgres.spent.store": "sqlite",
            "postgres.audit.store": "sqlite",
            "broker.persistence.enabled": True,
            "auditSink.persistence.enabled": True,
            "chat.persistence.enabled": True,
            "gateway.pdb.enabled": False,
        },
        (),
    ),
    "scaled-bundle-hostpath": (
        {
            "gateway.replicas": 4,
            "approvals.replicas": 3,
            "issuer.replicas": 3,
            "broker.replicas": 5,
            "auditSink.replicas": 3,
            "identity.spiffe.workloadApi": "hostPath",
            "opa.source": "bundle",
            "opa.bundle.url": "https://bundles.example.com",
            "opa.bundle.tokenSecret": "atb-bundle-token",
            "opa.bundle.signing.publicKey": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n",
            "trustDomain": "prod.example.com",
            "kafka.topicNamespace": "blue.",
            "kafka.topicsJob.enabled": True,
            "monitoring.serviceMonitor.enabled": True,
            "monitoring.prometheusRule.enabled": True,
        },
        (),
    ),
}


@pytest.fixture(scope="session", params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest, tools: Tools) -> tuple[str, dict[str, Any], Rendered]:
    name: str = request.param
    values, files = VARIANTS[name]
    merged: dict[str, Any] = {}
    for file in files:
        merged |= _flatten(yaml.safe_load(file.read_text()))
    merged |= values
    return name, merged, render(tools, values, files)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and key not in ("config", "connectorEgress"):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _defaults() -> dict[str, Any]:
    return _flatten(yaml.safe_load((CHART / "values.yaml").read_text()))


def value(values: Mapping[str, Any], key: str) -> Any:
    return values[key] if key in values else _defaults()[key]


def containers(pod: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers", [])
    yield from pod["containers"]


# --- workloads -----------------------------------------------------------------------------------


def test_every_workload_is_hardened_probed_budgeted_and_scaled(variant: tuple[str, dict[str, Any], Rendered]) -> None:
    name, values, rendered = variant
    workloads = rendered.of_kind("Deployment", "StatefulSet")
    assert sorted(w["metadata"]["labels"]["app.kubernetes.io/component"] for w in workloads) == sorted(WORKLOADS)
    pdbs = {p["metadata"]["name"]: p for p in rendered.of_kind("PodDisruptionBudget")}
    for service in WORKLOADS:
        w = rendered.workload(service)
        where = f"{name}: {service}"
        key = VALUES_KEY[service]
        assert w["spec"]["replicas"] == value(values, f"{key}.replicas"), where
        deployments = ("gateway", "chat", "console", RECEIVER)
        assert w["kind"] == ("Deployment" if service in deployments else "StatefulSet"), where
        pod = w["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in containers(pod):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["runAsNonRoot"] is True, (where, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, (where, c["name"])
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (where, c["name"], kind)
        main = pod["containers"]
        assert [c["name"] for c in main] == [service], where
        env = {e["name"]: e.get("value") for e in main[0]["env"]}
        ops = next(p for p in main[0]["ports"] if p["name"] == OPS)
        if service == RECEIVER:  # its one port (uploads, /healthz, /metrics) is given on the command line
            assert f"--port={ops['containerPort']}" in main[0]["command"], where
            assert "--host=0.0.0.0" in main[0]["command"], where
        else:
            assert str(ops["containerPort"]) == env["ATB_OPS_PORT"], where
            assert env["ATB_OPS_HOST"] == "0.0.0.0", where  # noqa: S104 - the kubelet probes the pod's address
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert main[0][probe]["httpGet"] == {"path": "/healthz", "port": OPS}, (where, probe)
        # Writable scratch only where mounted: /tmp and the state folder.
        mounts = {m["mountPath"]: m for m in main[0]["volumeMounts"]}
        assert {"/tmp", "/var/lib/atb"} <= set(mounts), where
        writable = {p for p, m in mounts.items() if not m.get("readOnly")}
        assert writable == {"/tmp", "/var/lib/atb"}, (where, writable)
        assert env["ATB_STATE_DIR"] == "/var/lib/atb", where
        volumes = {v["name"]: v for v in pod["volumes"]}
        persistent = value(values, f"{key}.persistence.enabled") if service != "gateway" else False
        state_claim = any(t["metadata"]["name"] == "state" for t in w["spec"].get("volumeClaimTemplates", []))
        if persistent:
            assert state_claim or "persistentVolumeClaim" in volumes["state"], where
            if w["kind"] == "Deployment":
                assert w["spec"]["strategy"] == {"type": "Recreate"}, "a second pod could not mount the claim"
        else:
            assert "emptyDir" in volumes["state"], where
            assert not state_claim, where
        # The PodDisruptionBudget selects exactly this workload's pods.
        pdb = pdbs.get(w["metadata"]["name"])
        if value(values, f"{key}.pdb.enabled"):
            assert pdb is not None, f"{where}: no PodDisruptionBudget"
            assert pdb["spec"]["selector"]["matchLabels"] == w["spec"]["selector"]["matchLabels"], where
            assert pdb["spec"]["maxUnavailable"] >= 1, where
        else:
            assert pdb is None, where


def test_the_topics_job_only_when_asked_and_hardened(variant: tuple[str, dict[str, Any], Rendered]) -> None:
    name, values, rendered = variant
    jobs = rendered.of_kind("Job")
    if not value(values, "kafka.topicsJob.enabled"):
        assert not jobs, name
        return
    (job,) = jobs
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["ATB_TOPIC_NAMESPACE"] == value(values, "kafka.topicNamespace")
    assert "ensure_topics" in container["command"][-1]


def test_opa_sidecar_exactly_where_policy_is_asked(variant: tuple[str, dict[str, Any], Rendered]) -> None:
    name, values, rendered = variant
    asks = {s for s in SERVICES if "settings.opa_url" in _main_source(s)}
    assert asks == {"approvals", "issuer", "broker"}, asks
    for service in SERVICES:
        pod = rendered.workload(service)["spec"]["template"]["spec"]
        sidecars = [c for c in pod.get("initContainers", []) if c["name"] == "opa"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        if service not in asks:
            assert not sidecars, (name, service)
            assert "ATB_OPA_URL" not in env, (name, service)
            continue
        assert len(sidecars) == 1, (name, service)
        opa = sidecars[0]
        assert opa["restartPolicy"] == "Always", "a native sidecar: started before the service"
        assert opa["image"].endswith(f":{OPA_VERSION.removeprefix('v')}"), opa["image"]
        addr = next(a for a in opa["args"] if a.startswith("--addr="))
        assert addr == f"--addr={env['ATB_OPA_URL'].removeprefix('http://')}", (addr, env["ATB_OPA_URL"])
        assert addr.startswith("--addr=127.0.0.1:"), "the policy API stays inside the pod"
        if value(values, "opa.source") == "bundle":
            assert "--config-file=/config/opa.yaml" in opa["args"]
            assert opa["readinessProbe"]["httpGet"]["path"] == "/health?bundles=true"
        else:
            assert opa["args"][-1] == "/policy"
        # Every sidecar uploads its decisions to the receiver (policyDecisionLogs.enabled, the default).
        assert "--config-file=/config/opa.yaml" in opa["args"], (name, service)
        assert {"name": "opa-config", "mountPath": "/config", "readOnly": True} in opa["volumeMounts"]


def test_every_opa_sidecar_uploads_its_decisions_to_the_receiver(variant: tuple[str, dict[str, Any], Rendered]) -> None:
    """The receiver pod runs `atb policy decision-log-receiver` with its SVID; each OPA's configuration
    sends every decision to the receiver's Service, and keeps verifying bundles in bundle mode."""
    name, values, rendered = variant
    config = yaml.safe_load(rendered.named("ConfigMap", "atb-opa")["data"]["opa.yaml"])
    service = rendered.named("Service", f"atb-{RECEIVER}")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == OPS)
    assert config["services"]["decision-logs"] == {"url": f"http://atb-{RECEIVER}:{port}"}, name
    assert config["decision_logs"]["service"] == "decision-logs"
    reporting = config["decision_logs"]["reporting"]
    assert reporting["buffer_type"] == "size"
    assert reporting["buffer_size_limit_bytes"] == value(values, "policyDecisionLogs.bufferSizeLimitBytes")
    assert config["status"] == {"prometheus": True}, "the ATBPolicy* alerts read OPA's metrics"
    if value(values, "opa.source") == "bundle":
        assert config["bundles"]["atb"]["signing"]["keyid"], name
    else:
        assert "bundles" not in config, name
    pod = rendered.workload(RECEIVER)["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    assert main["image"].rsplit(":", 1)[0].endswith("/broker"), "the receiver is the broker image's atb command"
    assert main["command"][:3] == ["atb", "policy", "decision-log-receiver"]
    svid = next(m for m in main["volumeMounts"] if m["name"] == "svid")
    assert f"--svid-cert={svid['mountPath']}/svid.pem" in main["command"]
    assert f"--svid-key={svid['mountPath']}/svid_key.pem" in main["command"]
    env = {e["name"]: e.get("value") or "" for e in main["env"]}
    atb = {k for k in env if k.startswith("ATB_")}
    known = {f"ATB_{f.upper()}" for f in CommonSettings.model_fields}
    assert not atb - known, f"{name}: the receiver gets {sorted(atb - known)}, which it does not read"
    loaded = _load(CommonSettings, {k: env[k] for k in atb})
    assert loaded.kafka_bootstrap_servers == value(values, "kafka.bootstrapServers")
    assert loaded.topic_namespace == value(values, "kafka.topicNamespace")


def test_without_the_receiver_no_sidecar_uploads(tools: Tools) -> None:
    rendered = render(tools, {"policyDecisionLogs": {"enabled": False}})
    assert RECEIVER not in {
        w["metadata"]["labels"]["app.kubernetes.io/component"] for w in rendered.of_kind("Deployment")
    }
    for service in ("approvals", "issuer", "broker"):
        opa = next(
            c for c in rendered.workload(service)["spec"]["template"]["spec"]["initContainers"] if c["name"] == "opa"
        )
        assert not any(a.startswith("--config-file") for a in opa["args"]), service
    assert not [c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"] == "atb-opa"]


def test_the_policy_configmap_is_the_repository_policy(tools: Tools) -> None:
    rendered = render(tools)
    data = rendered.named("ConfigMap", "atb-policy")["data"]
    policy = REPO / "opa" / "policy"
    want = {p.name: p.read_text().rstrip("\n") for p in policy.iterdir() if not p.name.endswith("_test.rego")}
    assert {k: v.rstrip("\n") for k, v in data.items()} == want


def test_the_packaged_chart_renders_the_same(tools: Tools, tmp_path: Path) -> None:
    """`helm package` resolves the links (files/policy, files/prometheus-alerts.yml) into files."""
    done = subprocess.run(
        [str(tools.helm), "package", str(CHART), "-d", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    (package,) = tmp_path.glob("atb-*.tgz")
    listed = subprocess.run(["tar", "tzf", str(package)], capture_output=True, text=True, check=True).stdout.split()
    assert "atb/files/policy/poa.rego" in listed
    assert not [f for f in listed if f.endswith("_test.rego")], listed
    values = {"monitoring.prometheusRule.enabled": True}
    from_package = subprocess.run(
        [str(tools.helm), "template", "atb", str(package), "--namespace", "atb", *helm_args(values)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert from_package.returncode == 0, from_package.stderr
    assert [d for d in yaml.safe_load_all(from_package.stdout) if d] == render(tools, values).docs


def test_bundle_mode_verifies_signatures(tools: Tools) -> None:
    key = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----\n"
    values = {
        "opa.source": "bundle",
        "opa.bundle.url": "https://bundles.example.com",
        "opa.bundle.signing.publicKey": key,
    }
    rendered = render(tools, values)
    config = yaml.safe_load(rendered.named("ConfigMap", "atb-opa")["data"]["opa.yaml"])
    assert config["bundles"]["atb"]["signing"] == {"keyid": "atb-policy"}
    assert config["keys"]["atb-policy"] == {"algorithm": "RS256", "key": key}
    assert config["services"]["policy"]["url"] == "https://bundles.example.com"
    assert not rendered.of_kind("ConfigMap") or all(
        c["metadata"]["name"] != "atb-policy" for c in rendered.of_kind("ConfigMap")
    )
    # Signing on (the default) without a key, or a bundle without a URL, does not render.
    for broken in ({"opa.source": "bundle", "opa.bundle.url": "https://b"}, {"opa.source": "bundle"}):
        refused = _template(tools, broken)
        assert refused.returncode != 0, broken
        assert "opa.bundle" in refused.stderr, refused.stderr


def _rsa_pair(folder: Path, name: str) -> tuple[Path, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = folder / f"{name}.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


@contextmanager
def _bundle_server(folder: Path) -> Iterator[str]:
    """A local HTTP bundle service for `folder` (as the bundle service the values name)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def _run_sidecar(opa: Path, sidecar: Mapping[str, Any], config: str, work: Path, until: str) -> tuple[int, str]:
    """The rendered OPA sidecar's own arguments over its rendered config: (/health?bundles=true
    status, OPA's log) once its log shows `until`."""
    (work / "config").mkdir()
    (work / "config" / "opa.yaml").write_text(config)
    diagnostic = _free_port()
    args = []
    for arg in sidecar["args"]:
        if arg.startswith("--addr="):
            arg = f"--addr=127.0.0.1:{_free_port()}"
        elif arg.startswith("--diagnostic-addr="):
            arg = f"--diagnostic-addr=127.0.0.1:{diagnostic}"
        elif arg.startswith("--config-file=/config/"):
            arg = f"--config-file={work / 'config' / arg.rsplit('/', 1)[1]}"
        args.append(arg)
    log = work / "opa.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(str(opa), *args, stdout=out, stderr=subprocess.STDOUT)
    try:

        async def logged() -> str:
            assert proc.returncode is None, f"OPA exited: {log.read_text()[-2000:]}"
            return log.read_text()

        await wait_until(logged, lambda text: until in text, timeout=60, what=f"OPA logging {until!r}")
        probe = sidecar["readinessProbe"]["httpGet"]["path"]

        async def ready() -> int | None:
            """The probe's status; None while OPA's diagnostic server is not listening yet (it may start after
            the bundle plugin has logged)."""
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{diagnostic}{probe}") as response,
                ):
                    return response.status
            except aiohttp.ClientConnectorError:
                return None

        status = await wait_until(ready, lambda got: got is not None, timeout=30, what="OPA's diagnostic server")
        assert status is not None
        return status, log.read_text()
    finally:
        proc.terminate()
        await proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_bundle_mode_activates_only_a_bundle_signed_with_the_configured_key(tools: Tools, tmp_path: Path) -> None:
    """Real OPA, started as the rendered sidecar with the rendered config, polling a local bundle
    service: a bundle signed with the configured key is activated (the pod turns Ready), one signed
    with another key or not signed at all never is."""
    opa = await build_opa(DevConfig.from_env())
    signer, public = _rsa_pair(tmp_path, "signer")
    other, _ = _rsa_pair(tmp_path, "other")
    served = tmp_path / "served"
    (served / "bundles").mkdir(parents=True)
    cases = [
        ("signed", signer, 200, "Bundle loaded and activated successfully"),
        ("other key", other, 500, "failed to verify JWT signature"),
        ("unsigned", None, 500, "Bundle load failed"),
    ]
    with _bundle_server(served) as url:
        values = {
            "opa.source": "bundle",
            "opa.bundle.url": url,
            "opa.bundle.signing.publicKey": public,
            "opa.bundle.minDelaySeconds": 1,
            "opa.bundle.maxDelaySeconds": 2,
        }
        rendered = render(tools, values)
        config = rendered.named("ConfigMap", "atb-opa")["data"]["opa.yaml"]
        sidecar = next(
            c for c in rendered.workload("broker")["spec"]["template"]["spec"]["initContainers"] if c["name"] == "opa"
        )
        for name, key, status, logged in cases:
            bundle = served / "bundles" / "atb.tar.gz"
            sign = ["--signing-key", str(key)] if key else []
            built = await asyncio.to_thread(
                subprocess.run,
                [str(opa), "build", "-b", ".", "--ignore", "*_test.rego", *sign, "-o", str(bundle)],
                cwd=REPO / "opa" / "policy",
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert built.returncode == 0, built.stderr
            work = tmp_path / name.replace(" ", "-")
            work.mkdir()
            got, log = await _run_sidecar(opa, sidecar, config, work, logged)
            assert got == status, (name, log[-1500:])
            if status != 200:
                assert "activated successfully" not in log, name


def _template(tools: Tools, values: Mapping[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tools.helm), "template", "atb", str(CHART), *helm_args(values)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"broker.replicas": 2, "postgres.spent.store": "sqlite"}, "broker.replicas=1"),
        ({"auditSink.replicas": 2, "postgres.audit.store": "sqlite"}, "auditSink.replicas=1"),
        ({"identity.mode": "files"}, "identity.mode"),
        (
            {
                "networkPolicy.enabled": True,
                "networkPolicy.postgres.to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                "config.connectors": {"connectors": [{"name": "sap", "actions": ["sap.*"], "egress": ["sap.example"]}]},
            },
            'no entry for connector "sap"',
        ),
        ({"networkPolicy.enabled": True}, "networkPolicy.postgres.to"),
        (
            {
                "networkPolicy.enabled": True,
                "networkPolicy.postgres.to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                "issuer.callbackHosts": ["hooks.agents.example"],
            },
            "networkPolicy.callbackTo",
        ),
        ({"console.rpId": ""}, "console.rpId"),
        ({"console.audit.enabled": True}, "console.audit.verifierKey"),
        (
            {
                "console.audit.enabled": True,
                "console.audit.verifierKey": "k",
                "postgres.audit.store": "sqlite",
                "auditSink.replicas": 1,
            },
            "postgres.audit.store=postgres",
        ),
    ],
)
def test_unsafe_or_unknown_choices_do_not_render(tools: Tools, values: dict[str, Any], message: str) -> None:
    refused = _template(tools, values)
    assert refused.returncode != 0, f"{values} rendered"
    assert message in refused.stderr, refused.stderr


# --- identity ------------------------------------------------------------------------------------


def test_identity_modes(tools: Tools) -> None:
    for mode, api in (("spiffe", "csi"), ("spiffe", "hostPath"), ("secret", "csi")):
        rendered = render(tools, {"identity.mode": mode, "identity.spiffe.workloadApi": api})
        for service in SERVICES:
            pod = rendered.workload(service)["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
            inits = [c["name"] for c in pod.get("initContainers", [])]
            if service == "audit-sink":
                assert "svid" not in volumes
                assert "ATB_SVID_CERT_PATH" not in env
                continue
            assert env["ATB_SVID_CERT_PATH"] == "/run/atb/svid/svid.pem"
            assert env["ATB_SVID_KEY_PATH"] == "/run/atb/svid/svid_key.pem"
            assert env["ATB_TRUST_BUNDLE_PATH"] == "/run/atb/svid/bundle.pem"
            if mode == "secret":
                sources = volumes["svid"]["projected"]["sources"]
                paths = sorted(i["path"] for s in sources for i in s["secret"]["items"])
                assert paths == ["bundle.pem", "svid.pem", "svid_key.pem"], (service, paths)
                assert sources[0]["secret"]["name"] == f"atb-svid-{service}"
                assert "spiffe-helper" not in inits
                continue
            assert volumes["svid"]["emptyDir"]["medium"] == "Memory"
            assert inits[:2] == ["spiffe-helper-init", "spiffe-helper"], inits
            socket = volumes["spiffe-workload-api"]
            if api == "csi":
                assert socket["csi"] == {"driver": "csi.spiffe.io", "readOnly": True}
            else:
                assert socket["hostPath"]["path"] == "/run/spire/agent-sockets"
        if mode == "spiffe":
            conf = rendered.named("ConfigMap", "atb-spiffe-helper")["data"]["helper.conf"]
            assert 'cert_dir = "/run/atb/svid"' in conf
            assert 'svid_file_name = "svid.pem"' in conf


# --- environment against the settings -------------------------------------------------------------


def _main_source(service: str) -> str:
    return (REPO / "services" / service / PACKAGE[service] / "main.py").read_text()


def _settings_class(service: str) -> type[CommonSettings]:
    module = __import__(f"{PACKAGE[service]}.settings", fromlist=["settings"])
    classes = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, CommonSettings) and v is not CommonSettings
    ]
    assert len(classes) == 1, classes
    return classes[0]


def _image_env(service: str) -> dict[str, str]:
    """The ENV lines of the root Dockerfile for this service's image (the migrations folders)."""
    env: dict[str, str] = {}
    stage = ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            stage = line.split()[-1]
        elif line.startswith("ENV ") and stage in ("runtime", f"svc-{service}"):
            for pair in re.findall(r"(\w+)=(\S+)", line):
                env[pair[0]] = pair[1]
    return env


def _required(service: str, cls: type[BaseSettings]) -> set[str]:
    """The settings the deployment must set: paths whose default is unset or in a checkout (not in an
    image), addresses whose default is this machine, and the OPA URL where policy is asked."""
    required: set[str] = set()
    for field, info in cls.model_fields.items():
        default = info.get_default(call_default_factory=True)
        annotation = str(info.annotation)
        if "Path" in annotation and (default is None or str(REPO) in str(default)):
            required.add(f"ATB_{field.upper()}")
        if isinstance(default, str) and re.search(r"(127\.0\.0\.1|localhost)", default):
            required.add(f"ATB_{field.upper()}")
    if "settings.opa_url" not in _main_source(service):
        required.discard("ATB_OPA_URL")
    # Inside the state folder (a pod volume), so a default is fine.
    required -= {
        "ATB_CHECKPOINT_KEY_PATH",
        "ATB_CHAT_DB_PATH",
        "ATB_CONSOLE_DB_PATH",
        "ATB_CONSOLE_AUDIT_KEY_PATH",
        "ATB_STATE_DIR",
    }
    # Unset means the system's CAs for the agents' callback receivers.
    required.discard("ATB_CALLBACK_CA_PATH")
    # The SQLite spent store / audit store stay possible for one replica: the chart still sets them.
    return required - set(_image_env(service))


def _container_env(rendered: Rendered, service: str) -> dict[str, str | None]:
    main = rendered.workload(service)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in main["env"]}


def test_each_container_env_is_exactly_what_its_settings_need(variant: tuple[str, dict[str, Any], Rendered]) -> None:
    name, values, rendered = variant
    trust_domain = value(values, "trustDomain")
    for service in SERVICES:
        cls = _settings_class(service)
        env = _container_env(rendered, service)
        atb = {k for k in env if k.startswith("ATB_")}
        known = {f"ATB_{f.upper()}" for f in cls.model_fields}
        assert not atb - known, f"{name}: {service} gets {sorted(atb - known)}, which {cls.__name__} does not read"
        missing = _required(service, cls) - atb
        assert not missing, f"{name}: {service} lacks {sorted(missing)}"
        # The settings load from exactly this environment (lists and maps as JSON), with no path
        # left to a default in a checkout.
        loaded = _load(cls, {k: v or "" for k, v in env.items() if k in atb})
        assert loaded.service_id == f"spiffe://{trust_domain}/svc/{service}"  # type: ignore[attr-defined]
        ids = [v for k, v in env.items() if v and "spiffe://" in v]
        assert ids, service
        assert all(f"spiffe://{trust_domain}/" in v for v in ids), (service, ids)
        if trust_domain == "atb.local":
            # The derived lists are the services' own defaults in the default trust domain.
            for field in ("request_attesters", "vote_attesters", "vote_attester_tiers", "quorum_producers", "issuers"):
                if f"ATB_{field.upper()}" in atb:
                    assert getattr(loaded, field) == cls.model_fields[field].get_default(call_default_factory=True)
        assert loaded.kafka_bootstrap_servers == value(values, "kafka.bootstrapServers")
        assert loaded.topic_namespace == value(values, "kafka.topicNamespace")


def _load(cls: type[CommonSettings], env: Mapping[str, str]) -> CommonSettings:
    """The settings as the container loads them: from the environment only (`ATB_INSTANCE=auto`)."""
    probe = textwrap.dedent(
        f"""
        import json, os, sys
        from {cls.__module__} import {cls.__name__} as S
        s = S()
        print(s.model_dump_json())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert done.returncode == 0, f"{cls.__name__} does not load from the chart's env: {done.stderr[-1500:]}"
    return cls.model_validate_json(done.stdout)


def test_the_broker_reads_the_issuer_keys_from_the_issuer_service(tools: Tools) -> None:
    rendered = render(tools)
    env = _container_env(rendered, "broker")
    issuer = rendered.named("Service", "atb-issuer")
    port = next(p["port"] for p in issuer["spec"]["ports"] if p["name"] == OPS)
    assert env["ATB_JWKS_URL"] == f"http://atb-issuer:{port}/.well-known/jwks.json"


def test_the_registries_in_values_load_with_the_services_loaders(tools: Tools, tmp_path: Path) -> None:
    from atb_runtime.agents import load_agent_registry
    from broker.adapters.connectors import load_registry
    from broker.adapters.policy import load_directory

    for files in ((), (CHART / "examples" / "values-production.yaml",)):
        data = render(tools, files=files).named("ConfigMap", "atb-config")["data"]
        for file, text in data.items():
            (tmp_path / file).write_text(text)
        load_agent_registry(tmp_path / "agents.json")
        load_directory(tmp_path / "approvers.json")
        load_registry(tmp_path / "connectors.json")


# --- the validator can fail ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(imagePullPolice="x"),
            'unknown field "imagePullPolice"',
        ),
        (lambda d: d["spec"]["selector"]["matchLabels"].update(extra="x"), "does not match the pod template"),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"].append(
                {"name": "nowhere", "mountPath": "/x"}
            ),
            'volumeMounts "nowhere": no volume',
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"].append(
                {"name": "ATB_OPS_PORT", "value": "1"}
            ),
            "set twice",
        ),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"].update(
                requests={"memory": "2Gi"}, limits={"memory": "1Gi"}
            ),
            "above its limit",
        ),
        (lambda d: d["spec"].update(replicas="two"), "cannot unmarshal"),
    ],
)
def test_the_validator_refuses_what_the_api_server_would(tools: Tools, edit: Any, message: str) -> None:
    rendered = render(tools)
    workload = json.loads(json.dumps(rendered.workload("issuer")))
    unchanged = subprocess.run(
        [str(tools.validator), "-practices=false", "-"], input=yaml.safe_dump(workload), capture_output=True, text=True
    )
    assert unchanged.returncode == 0, unchanged.stderr
    edit(workload)
    done = subprocess.run(
        [str(tools.validator), "-practices=false", "-"],
        input=yaml.safe_dump(workload),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout
    assert message in done.stderr, done.stderr


def _container(d: dict[str, Any], name: str) -> dict[str, Any]:
    pod = d["spec"]["template"]["spec"]
    found: dict[str, Any] = next(c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == name)
    return found


def _sc(d: dict[str, Any], name: str) -> dict[str, Any]:
    context: dict[str, Any] = _container(d, name)["securityContext"]
    return context


def _root_allowed(d: dict[str, Any]) -> None:
    """Neither the pod nor the service container says runAsNonRoot (the sidecars still do)."""
    d["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot")
    _sc(d, "issuer").pop("runAsNonRoot")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: _container(d, "issuer")["securityContext"].update(readOnlyRootFilesystem=False),
            "root filesystem writable",
        ),
        (
            lambda d: _container(d, "opa")["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation",
        ),
        (
            lambda d: _container(d, "spiffe-helper")["securityContext"]["capabilities"].update(drop=["NET_RAW"]),
            "drop ALL",
        ),
        (lambda d: _container(d, "issuer").update(image="atb/issuer:latest"), "no pinned tag"),
        (lambda d: _container(d, "issuer").update(image="atb/issuer"), "no pinned tag"),
        (lambda d: _container(d, "issuer")["resources"].pop("limits"), "no memory limit"),
        (lambda d: _container(d, "issuer").pop("readinessProbe"), "needs liveness and readiness probes"),
        (lambda d: _container(d, "spiffe-helper").pop("livenessProbe"), "needs liveness and readiness probes"),
        (lambda d: d["spec"]["template"]["spec"].update(hostNetwork=True), "host namespace"),
        (lambda d: d["spec"]["template"]["spec"].pop("automountServiceAccountToken"), "automountServiceAccountToken"),
        (_root_allowed, "issuer]: may run as root"),
    ],
)
def test_the_validator_holds_the_chart_to_its_practices(tools: Tools, edit: Any, message: str) -> None:
    rendered = render(tools)
    workload = json.loads(json.dumps(rendered.workload("issuer")))
    budget = rendered.named("PodDisruptionBudget", workload["metadata"]["name"])
    docs = [workload, budget]
    unchanged = subprocess.run(
        [str(tools.validator), "-"], input=yaml.safe_dump_all(docs), capture_output=True, text=True, timeout=60
    )
    assert unchanged.returncode == 0, unchanged.stderr
    edit(workload)
    done = subprocess.run(
        [str(tools.validator), "-"], input=yaml.safe_dump_all(docs), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stdout
    assert "practice: " in done.stderr, done.stderr
    assert message in done.stderr, done.stderr
    # Without its PodDisruptionBudget the workload is refused too.
    alone = subprocess.run(
        [str(tools.validator), "-"], input=yaml.safe_dump(rendered.workload("issuer")), capture_output=True, text=True
    )
    assert "no PodDisruptionBudget selects its pods" in alone.stderr, alone.stderr


# --- network policies ----------------------------------------------------------------------------


def test_network_policies_allow_only_the_flows_each_service_needs(
    variant: tuple[str, dict[str, Any], Rendered],
) -> None:
    name, values, rendered = variant
    policies = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in rendered.of_kind("NetworkPolicy")}
    if not value(values, "networkPolicy.enabled"):
        assert not policies, name
        return
    assert sorted(policies) == sorted(WORKLOADS)
    merged = {**_defaults(), **values}
    np = {k.removeprefix("networkPolicy."): v for k, v in merged.items() if k.startswith("networkPolicy.")}
    connectors = merged["config"]["connectors"]["connectors"]
    assert connectors or name == "defaults", "the variant onboards no connector: nothing to check for the broker"
    for service, policy in policies.items():
        spec = policy["spec"]
        assert spec["podSelector"]["matchLabels"] == rendered.workload(service)["spec"]["selector"]["matchLabels"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        # No rule is open to everything: every egress rule names its peers and its ports.
        for rule in spec["egress"]:
            assert rule.get("to"), (service, rule)
            assert rule.get("ports"), (service, rule)
        egress = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
        assert {(53, "UDP"), (53, "TCP"), (np["kafka.port"], "TCP")} <= egress, service
        uses_pg = (service, "postgres") in {
            ("audit-sink", value(values, "postgres.audit.store")),
            ("broker", value(values, "postgres.spent.store")),
        }
        assert ((np["postgres.port"], "TCP") in egress) == uses_pg, service
        ingress_ports = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
        api = {"gateway": {"https"}, "broker": {"https"}, "chat": {"http"}, "console": {"http"}}.get(service, set())
        assert ingress_ports == {OPS, *api}, (service, ingress_ports)
    # The broker reaches each connector of the registry through exactly its configured peers.
    broker_rules = policies["broker"]["spec"]["egress"]
    for connector in connectors:
        wanted = np["connectorEgress"][connector["name"]]
        assert any(
            r["to"] == wanted["to"] and [p["port"] for p in r["ports"]] == wanted["ports"] for r in broker_rules
        ), connector["name"]
    # Only the brokers may read the issuer's keys besides the scrapers.
    issuer_from = [rule.get("from") for rule in policies["issuer"]["spec"]["ingress"]]
    broker_pods = rendered.workload("broker")["spec"]["selector"]
    assert [{"podSelector": broker_pods}] in issuer_from, issuer_from
    # Only the pods with an OPA sidecar may upload decisions to the receiver besides the scrapers, and
    # exactly those reach it.
    receiver_from = [rule.get("from") for rule in policies[RECEIVER]["spec"]["ingress"]]
    askers = [{"podSelector": rendered.workload(s)["spec"]["selector"]} for s in ("approvals", "issuer", "broker")]
    assert askers in receiver_from, receiver_from
    receiver_pods = rendered.workload(RECEIVER)["spec"]["selector"]
    for service, policy in policies.items():
        reaches = any(r["to"] == [{"podSelector": receiver_pods}] for r in policy["spec"]["egress"])
        assert reaches == (service in ("approvals", "issuer", "broker")), service


# --- monitoring ------------------------------------------------------------------------------------


def test_the_service_monitor_scrapes_every_service_once_and_the_rules_are_the_tested_ones(
    variant: tuple[str, dict[str, Any], Rendered],
) -> None:
    name, values, rendered = variant
    monitors, rules = rendered.of_kind("ServiceMonitor"), rendered.of_kind("PrometheusRule")
    if not value(values, "monitoring.serviceMonitor.enabled"):
        assert not monitors, name
    else:
        (monitor,) = monitors
        selector = monitor["spec"]["selector"]
        assert monitor["spec"]["endpoints"] == [
            {"port": OPS, "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
        ]
        scraped = [s for s in rendered.of_kind("Service") if _selects(selector, s["metadata"]["labels"])]
        assert sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in scraped) == sorted(WORKLOADS)
        for service in scraped:
            assert OPS in {p["name"] for p in service["spec"]["ports"]}, service["metadata"]["name"]
    if not value(values, "monitoring.prometheusRule.enabled"):
        assert not rules, name
    else:
        (rule,) = rules
        alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
        assert rule["spec"]["groups"] == alerts["groups"]


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        if expression["operator"] == "DoesNotExist" and present:
            return False
        if expression["operator"] == "Exists" and not present:
            return False
        if expression["operator"] == "In" and labels.get(expression["key"]) not in expression["values"]:
            return False
        if expression["operator"] == "NotIn" and labels.get(expression["key"]) in expression["values"]:
            return False
    return True


# --- Kafka topics --------------------------------------------------------------------------------


def test_the_strimzi_topics_are_the_catalogue() -> None:
    docs = [d for d in yaml.safe_load_all((STRIMZI / "topics.yaml").read_text()) if d]
    topics = {d["spec"]["topicName"]: d for d in docs}
    assert sorted(topics) == sorted(spec.topic.value for spec in CATALOGUE)
    kafka = next(d for d in yaml.safe_load_all((STRIMZI / "kafka.yaml").read_text()) if d and d["kind"] == "Kafka")
    cluster = kafka["metadata"]["name"]
    for spec in CATALOGUE:
        doc = topics[spec.topic.value]
        assert doc["kind"] == "KafkaTopic"
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert doc["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert doc["spec"]["partitions"] == spec.partitions, spec.topic
        assert doc["spec"]["config"] == spec.configs(), spec.topic
        assert doc["spec"]["replicas"] > kafka["spec"]["kafka"]["config"]["min.insync.replicas"] - 1
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    assert config["transaction.state.log.min.isr"] <= config["transaction.state.log.replication.factor"]
    # The chart's default bootstrap is this cluster's.
    assert (
        _defaults()["kafka.bootstrapServers"] == f"{cluster}-kafka-bootstrap.{kafka['metadata']['namespace']}.svc:9092"
    )


def test_tracing_endpoint_reaches_every_service(tools: Tools) -> None:
    """`tracing.otlpEndpoint` becomes OTEL_EXPORTER_OTLP_ENDPOINT in every service container; unset, none has it."""
    endpoint = "http://otel-collector.observability:4318"
    traced = render(tools, {"tracing": {"otlpEndpoint": endpoint}})
    plain = render(tools)
    for service in SERVICES:
        assert _container_env(traced, service).get("OTEL_EXPORTER_OTLP_ENDPOINT") == endpoint, service
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in _container_env(plain, service), service


def test_outcome_callbacks_are_allowed_only_to_the_listed_hosts(tools: Tools) -> None:
    """issuer.callbackHosts is the issuer's allowlist (ATB_CALLBACK_HOSTS), and its only way out for them."""
    peers = [{"ipBlock": {"cidr": "198.51.100.0/24"}}]
    rendered = render(
        tools,
        {
            "issuer.callbackHosts": ["hooks.agents.example"],
            "networkPolicy.enabled": True,
            "networkPolicy.postgres.to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
            "networkPolicy.callbackTo": peers,
        },
    )
    assert json.loads(_container_env(rendered, "issuer")["ATB_CALLBACK_HOSTS"] or "") == ["hooks.agents.example"]
    egress = rendered.named("NetworkPolicy", "atb-issuer")["spec"]["egress"]
    assert {"ports": [{"port": 443, "protocol": "TCP"}], "to": peers} in egress
    assert json.loads(_container_env(render(tools), "issuer")["ATB_CALLBACK_HOSTS"] or "") == []


def test_chat_links_high_and_critical_approvals_to_the_console(tools: Tools) -> None:
    """Chat's ATB_CONSOLE_URL is the console's public origin (the browsers' https://<rpId>, or console.origin)."""
    assert _container_env(render(tools), "chat")["ATB_CONSOLE_URL"] == "https://console.atb.example"
    rendered = render(
        tools, {"console.rpId": "approve.example.org", "console.origin": "https://approve.example.org:8443"}
    )
    assert _container_env(rendered, "chat")["ATB_CONSOLE_URL"] == "https://approve.example.org:8443"
    assert _container_env(rendered, "console")["ATB_CONSOLE_ORIGIN"] == "https://approve.example.org:8443"


def test_the_console_compliance_view_reads_the_audit_store_with_its_own_role_and_the_logs_key(tools: Tools) -> None:
    key = "atb.local/audit+0123abcd+" + "A" * 44
    rendered = render(
        tools,
        {
            "console.audit.enabled": True,
            "console.audit.verifierKey": key,
            "console.audit.archiveUrl": "s3://atb-audit/prod",
            "networkPolicy.enabled": True,
            "networkPolicy.postgres.to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
        },
    )
    env = _container_env(rendered, "console")
    assert env["ATB_CONSOLE_AUDIT_DB_URL"] == (
        "postgresql+psycopg://atb_console_ro@postgres.atb.svc:5432/atb_audit?sslmode=require"
    )
    assert env["ATB_CONSOLE_AUDIT_ARCHIVE_URL"] == "s3://atb-audit/prod"
    pod = rendered.workload("console")["spec"]["template"]["spec"]
    main = pod["containers"][0]
    password = next(e for e in main["env"] if e["name"] == "PGPASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "atb-console-audit-db", "key": "password"}
    mount = next(m for m in main["volumeMounts"] if m["name"] == "audit-verifier")
    assert env["ATB_CONSOLE_AUDIT_KEY_PATH"] == f"{mount['mountPath']}/verifier.pub"
    assert rendered.named("ConfigMap", "atb-audit-verifier")["data"] == {"verifier.pub": key}
    egress = rendered.named("NetworkPolicy", "atb-console")["spec"]["egress"]
    assert any(p["port"] == 5432 for rule in egress for p in rule["ports"]), "the console cannot reach PostgreSQL"
    # Off by default: no audit access at all.
    assert "ATB_CONSOLE_AUDIT_DB_URL" not in _container_env(render(tools), "console")


def test_approvals_and_the_issuer_share_the_pending_window(tools: Tools) -> None:
    rendered = render(tools, {"maxPendingSeconds": 3600})
    assert {_container_env(rendered, s)["ATB_MAX_PENDING_SECONDS"] for s in ("approvals", "issuer")} == {"3600"}
