"""Signed policy bundles against a real OPA (the pinned binary), started by each test (docs/policy.md).

Every test runs its own OPA (own port, own state folder, own configuration from
`atb.policy.opa_config`) that polls a bundle store served by the development
bundle server (`atb.policy.server`) in this process. Revisions are built from
copies of `opa/policy` outside git, so they are `sha256:<content>`; revision B
takes `crm.contact.read` off the low-risk allowlist, so B's answers differ from
A's. Every wait is on OPA's own report (`GET /v1/status`): its active revision,
or the error it gives for the bundle it last refused.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import socket
import subprocess
import tarfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pydantic import JsonValue
from typer.testing import CliRunner

from atb.cli import app as atb_app
from atb.dev.config import HOST, DevConfig
from atb.dev.opa import OPA_CONFIG_ENV, opa_process
from atb.dev.procs import ManagedProcess
from atb.dev.s3 import LocalS3
from atb.dev.toolchain import build_opa, build_versitygw
from atb.policy.bundle import build_bundle, read_bundle, revision_of, verify_bundle
from atb.policy.errors import PolicyBuildError, PolicyBundleUsageError
from atb.policy.keys import BundleSigningKey, ensure_dev_key, load_signing_key
from atb.policy.opa_config import BUNDLE_NAME, opa_config
from atb.policy.publish import (
    SERVED_NAME,
    http_publish,
    http_rollback,
    publish_to_dir,
    rollback_dir,
    s3_publish,
    s3_rollback,
    served_revision,
)
from atb.policy.server import bundle_server_app
from atb.policy.status import OpaBundleReport, opa_bundle_reports, wait_for_revision
from atb_runtime.opa import OpaClient, PolicyUnavailableError

pytestmark = pytest.mark.opa

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0
LOW_READ: dict[str, JsonValue] = {
    "action": "crm.contact.read",
    "tenant": "acme",
    "target_tenant": None,
    "agent_tenants": ["acme"],
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
async def opa_bin() -> Path:
    return await build_opa(DevConfig.from_env())


@dataclass
class Policies:
    """Two policy folders (A: as in the repository; B: crm.contact.read is no longer low) and their bundles."""

    a_dir: Path
    b_dir: Path
    key: BundleSigningKey
    other_key: BundleSigningKey
    opa: Path
    out: Path

    def build(self, folder: Path, key: BundleSigningKey | None = None) -> Path:
        built = build_bundle(self.opa, folder, self.out / f"{folder.name}.tar.gz", key or self.key, run_tests=False)
        return built.path


def _committed_policy(target: Path) -> None:
    """opa/policy as committed (HEAD), not the working tree: a change in progress there is not this test's."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", "HEAD", "opa/policy"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith("opa/policy/"):
                extracted = tar.extractfile(member)
                assert extracted is not None
                path = target / member.name.removeprefix("opa/policy/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(extracted.read())


@pytest.fixture
def policies(tmp_path: Path, opa_bin: Path) -> Policies:
    a_dir = tmp_path / "policy-a"
    _committed_policy(a_dir)
    b_dir = tmp_path / "policy-b"
    _committed_policy(b_dir)
    data = json.loads((b_dir / "data.json").read_text())
    data["atb_policy"]["low_risk_allowlist"].remove("crm.contact.read")
    (b_dir / "data.json").write_text(json.dumps(data, indent=2))
    for name in b_dir.glob("*_test.rego"):  # B's behaviour differs on purpose; its tests are A's
        name.unlink()
    key = load_signing_key(ensure_dev_key(tmp_path / "keys" / "signing.pem"))
    other = load_signing_key(ensure_dev_key(tmp_path / "keys" / "other.pem"))
    return Policies(a_dir, b_dir, key, other, opa_bin, tmp_path / "built")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    """A bundle store folder and the URL the development bundle server serves it on."""
    root = tmp_path / "store"
    root.mkdir()
    runner = web.AppRunner(bundle_server_app(root, upload_token="s3cret-upload-token"))
    await runner.setup()
    sock = socket.socket()
    sock.bind((HOST, 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield root, f"http://{HOST}:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
        sock.close()


@dataclass
class RunningOpa:
    url: str
    proc: ManagedProcess
    log: Path
    client: OpaClient

    async def report(self) -> OpaBundleReport:
        reports = [r for r in await opa_bundle_reports([self.url]) if r.bundle == BUNDLE_NAME]
        assert len(reports) == 1, reports
        return reports[0]

    async def until(self, predicate: Callable[[OpaBundleReport], bool]) -> OpaBundleReport:
        return await wait_for_revision(self.url, BUNDLE_NAME, predicate, timeout_s=WAIT_S)

    async def serves(self, revision: str) -> OpaBundleReport:
        return await self.until(lambda r: r.revision == revision and r.error is None)

    async def refused(self, fragment: str) -> OpaBundleReport:
        return await self.until(lambda r: r.error is not None and fragment in r.error)

    async def requirements(self) -> dict[str, JsonValue]:
        result = await self.client.evaluate("atb/poa/requirements", dict(LOW_READ))
        assert isinstance(result, dict)
        return result


@pytest.fixture
async def opa(tmp_path: Path, policies: Policies, store: tuple[Path, str]) -> AsyncIterator[RunningOpa]:
    """The pinned OPA in bundle mode (atb/dev/opa.py), polling the store every second, verifying signatures."""
    _, url = store
    async with _bundle_mode_opa(tmp_path, policies, service_url=url) as running:
        yield running


@asynccontextmanager
async def _bundle_mode_opa(tmp_path: Path, policies: Policies, **options: Any) -> AsyncIterator[RunningOpa]:
    config_file = tmp_path / "opa-config.json"
    document = opa_config(
        public_pem=policies.key.public_pem,
        algorithm=policies.key.algorithm,
        min_delay_s=1,
        max_delay_s=1,
        persistence_dir=str(tmp_path / "opa-persist"),
        **options,
    )
    config_file.write_text(json.dumps(document))
    port = _free_port()
    dev = DevConfig.from_env()
    config = DevConfig(
        repo=dev.repo,
        state_dir=tmp_path / "state",
        cache_dir=dev.cache_dir,
        kafka_port=dev.kafka_port,
        controller_port=dev.controller_port,
        opa_port=port,
    )
    proc = opa_process(config, policies.opa, config_file=config_file)
    assert "--config-file" in proc.argv
    assert "--watch" not in proc.argv
    await proc.start(ready_timeout=60.0)
    client = OpaClient(config.opa_url)
    try:
        yield RunningOpa(config.opa_url, proc, config.opa_dir / "opa.log", client)
    finally:
        await client.close()
        await proc.stop(10.0)


def _plant(store_root: Path, bundle: Path) -> None:
    """Put a bundle where OPA downloads it, bypassing `atb policy publish` (an attacker with store access)."""
    target = store_root / SERVED_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(".planted")
    tmp.write_bytes(bundle.read_bytes())
    tmp.replace(target)


def _unsigned(policies: Policies, folder: Path) -> Path:
    out = policies.out / f"{folder.name}-unsigned.tar.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(policies.opa), "build", "-b", ".", "--ignore", "*_test.rego", "--revision", "unsigned-1", "-o", str(out)],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    assert not read_bundle(out).signed
    return out


def _delta(out: Path) -> Path:
    """An unsigned delta bundle: a JSON patch that makes a critical action low risk."""
    patch = {
        "data": [
            {"op": "upsert", "path": "/atb_policy/critical_actions", "value": []},
            {"op": "upsert", "path": "/atb_policy/low_risk_allowlist/-", "value": "iam.admin.grant"},
        ]
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in ((".manifest", {"revision": "delta-1", "roots": [""]}), ("patch.json", patch)):
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(f"/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return out


def _tampered(signed: Path, out: Path) -> Path:
    """The signed bundle with data.json changed after signing (signatures kept as they were)."""
    buf = io.BytesIO()
    with tarfile.open(signed, "r:gz") as src, tarfile.open(fileobj=buf, mode="w:gz") as dst:
        for member in src.getmembers():
            extracted = src.extractfile(member)
            assert extracted is not None
            content = extracted.read()
            if member.name.lstrip("/") == "data.json":
                data = json.loads(content)
                data["atb_policy"]["critical_actions"] = []
                content = json.dumps(data).encode()
            member.size = len(content)
            dst.addfile(member, io.BytesIO(content))
    out.write_bytes(buf.getvalue())
    return out


async def test_signed_bundle_activates_and_every_answer_carries_its_revision(
    policies: Policies, store: tuple[Path, str], opa: RunningOpa
) -> None:
    root, _ = store
    bundle = policies.build(policies.a_dir)
    revision = read_bundle(bundle).revision
    assert revision == revision_of(policies.a_dir)
    assert revision.startswith("sha256:")  # outside git
    publish_to_dir(bundle, root)
    assert served_revision(root) == revision

    report = await opa.serves(revision)
    assert report.activated_at is not None
    requirements = await opa.requirements()
    assert requirements["tier"] == "low"
    assert requirements["policy_version"] == revision
    decisions = await opa.client.evaluate(
        "atb/poa/decisions", {"batch": [{"request": LOW_READ, "claims": None, "agent_id": "spiffe://x/agent"}]}
    )
    assert isinstance(decisions, list)
    assert isinstance(decisions[0], dict)
    assert decisions[0]["policy_version"] == revision


async def test_publish_then_rollback_serves_the_earlier_revision_again(
    policies: Policies, store: tuple[Path, str], opa: RunningOpa
) -> None:
    root, _ = store
    rev_a = publish_to_dir(policies.build(policies.a_dir), root).revision
    await opa.serves(rev_a)
    assert (await opa.requirements())["tier"] == "low"

    rev_b = publish_to_dir(policies.build(policies.b_dir), root).revision
    assert rev_b != rev_a
    await opa.serves(rev_b)
    after = await opa.requirements()
    assert (after["tier"], after["policy_version"]) == ("high", rev_b)

    stored_a = (root / "revisions" / f"{rev_a.replace(':', '-')}.tar.gz").read_bytes()
    rollback_dir(root, rev_a)
    assert (root / SERVED_NAME).read_bytes() == stored_a  # the earlier signed bundle, unchanged
    await opa.serves(rev_a)
    back = await opa.requirements()
    assert (back["tier"], back["policy_version"]) == ("low", rev_a)

    # `atb policy status` reads the same from OPA: not stale against the store, stale against B.
    runner = CliRunner()
    fresh = await asyncio.to_thread(
        runner.invoke, atb_app, ["policy", "status", "--opa", opa.url, "--dir", str(root), "--json"]
    )
    assert fresh.exit_code == 0, fresh.output
    assert json.loads(fresh.output)["instances"][0]["revision"] == rev_a
    stale = await asyncio.to_thread(
        runner.invoke, atb_app, ["policy", "status", "--opa", opa.url, "--expect", rev_b, "--json"]
    )
    assert stale.exit_code == 1, stale.output
    assert json.loads(stale.output)["instances"][0]["stale"] is True


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("bad signature", "failed to verify JWT signature"),
        ("unsigned", "bundle missing .signatures.json file"),
        ("content changed after signing", "digest mismatch"),
        # The pinned OPA refuses a delta bundle when signatures are required (before 1.21.3 only
        # `persist`, always on, made it refuse one it would otherwise activate unverified).
        ("unsigned delta bundle", "delta bundles do not support signature verification"),
    ],
)
async def test_a_refused_bundle_leaves_the_last_good_revision_deciding(
    policies: Policies, store: tuple[Path, str], opa: RunningOpa, kind: str, error: str
) -> None:
    root, _ = store
    good = policies.build(policies.a_dir)
    rev_a = publish_to_dir(good, root).revision
    await opa.serves(rev_a)

    if kind == "bad signature":
        bad = policies.build(policies.b_dir, key=policies.other_key)  # signed, with a key OPA does not trust
    elif kind == "unsigned":
        bad = _unsigned(policies, policies.b_dir)
    elif kind == "unsigned delta bundle":
        bad = _delta(policies.out / "delta.tar.gz")
    else:
        bad = _tampered(good, policies.out / "tampered.tar.gz")
    _plant(root, bad)

    refused = await opa.refused(error)  # OPA downloaded it and said why it refused it
    assert refused.revision == rev_a
    answer = await opa.requirements()
    assert (answer["tier"], answer["policy_version"]) == ("low", rev_a)
    critical = await opa.client.evaluate("atb/poa/requirements", {**LOW_READ, "action": "iam.admin.grant"})
    assert isinstance(critical, dict)
    assert (critical["tier"], critical["approvals"], critical["policy_version"]) == ("critical", 2, rev_a)
    log = opa.log.read_text()
    assert "Bundle load failed" in log
    assert error in log
    # The metrics deploy/prometheus/alerts.yml alerts on, as OPA exports them.
    async with aiohttp.ClientSession() as session, session.get(f"{opa.url}/metrics") as response:
        metrics = await response.text()
    refusals = [ln for ln in metrics.splitlines() if ln.startswith("bundle_failed_load_counter{")]
    assert any(error in ln and 'name="atb"' in ln for ln in refusals), refusals
    assert any(ln.startswith('last_success_bundle_request{name="atb"}') for ln in metrics.splitlines())

    # The store can still move on: a good bundle activates after the refused one.
    rev_b = publish_to_dir(policies.build(policies.b_dir), root).revision
    await opa.serves(rev_b)
    assert (await opa.requirements())["policy_version"] == rev_b


async def test_a_restarted_opa_decides_with_the_persisted_bundle_while_the_store_is_empty(
    policies: Policies, store: tuple[Path, str], opa: RunningOpa
) -> None:
    root, _ = store
    rev_a = publish_to_dir(policies.build(policies.a_dir), root).revision
    await opa.serves(rev_a)
    await opa.proc.stop(10.0)
    (root / SERVED_NAME).unlink()  # the store lost its bundle (or is down) while OPA restarts

    await opa.proc.start(ready_timeout=60.0)
    report = await opa.refused("server replied with Not Found")  # it polled the empty store...
    assert report.revision == rev_a  # ...and kept the bundle it had verified before
    answer = await opa.requirements()
    assert (answer["tier"], answer["policy_version"]) == ("low", rev_a)


async def test_without_any_bundle_the_client_fails_closed(
    policies: Policies, store: tuple[Path, str], opa: RunningOpa
) -> None:
    root, _ = store
    await opa.refused("server replied with Not Found")  # OPA polled an empty store
    with pytest.raises(PolicyUnavailableError, match="no decision"):
        await opa.requirements()

    _plant(root, _unsigned(policies, policies.a_dir))  # an unsigned bundle does not count as one
    await opa.refused("bundle missing .signatures.json file")
    never = await opa.report()
    assert (never.revision, never.activated_at) == (None, None)
    with pytest.raises(PolicyUnavailableError, match="no decision"):
        await opa.requirements()


async def test_bundle_server_etag_and_http_publish(policies: Policies, store: tuple[Path, str]) -> None:
    root, url = store
    bundle = policies.build(policies.a_dir)
    revision = read_bundle(bundle).revision
    with pytest.raises(Exception, match="401"):
        await http_publish(bundle, url, token="wrong")
    assert not (root / SERVED_NAME).exists()
    await http_publish(bundle, url, token="s3cret-upload-token")
    assert served_revision(root) == revision
    assert (root / "revisions" / f"{revision.replace(':', '-')}.tar.gz").read_bytes() == bundle.read_bytes()

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/{SERVED_NAME}") as first:
            assert first.status == 200
            etag = first.headers["ETag"]
            assert await first.read() == bundle.read_bytes()
        async with session.get(f"{url}/{SERVED_NAME}", headers={"If-None-Match": etag}) as again:
            assert again.status == 304
        publish_to_dir(policies.build(policies.b_dir), root)
        async with session.get(f"{url}/{SERVED_NAME}", headers={"If-None-Match": etag}) as changed:
            assert changed.status == 200
            assert changed.headers["ETag"] != etag
        async with session.get(f"{url}/bundles/..%2F..%2Fetc%2Fpasswd") as traversal:
            assert traversal.status == 404
    assert served_revision(root) != revision
    await http_rollback(url, revision, token="s3cret-upload-token")
    assert (root / SERVED_NAME).read_bytes() == bundle.read_bytes()
    with pytest.raises(PolicyBundleUsageError, match="never published"):
        await http_rollback(url, "sha256:" + "0" * 64, token="s3cret-upload-token")


def test_a_revision_is_immutable_and_only_signed_bundles_are_published(policies: Policies, tmp_path: Path) -> None:
    root = tmp_path / "store"
    bundle = policies.build(policies.a_dir)
    publish_to_dir(bundle, root)
    publish_to_dir(bundle, root)  # the same bytes again: idempotent
    other = policies.build(policies.a_dir, key=policies.other_key)  # same revision, other signature
    with pytest.raises(PolicyBundleUsageError, match="immutable"):
        publish_to_dir(other, root)
    with pytest.raises(PolicyBundleUsageError, match="not signed"):
        publish_to_dir(_unsigned(policies, policies.b_dir), root)
    with pytest.raises(PolicyBundleUsageError, match="never published"):
        rollback_dir(root, "sha256:" + "0" * 64)


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=policy@test", "-c", "user.name=policy test", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_the_revision_is_the_policy_commit_dirty_when_a_bundled_file_changed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    policy = repo / "opa" / "policy"
    _committed_policy(policy)
    (repo / "README").write_text("x\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "policy")
    policy_commit = _git(repo, "rev-parse", "HEAD")
    assert revision_of(policy) == policy_commit

    (repo / "README").write_text("y\n")
    _git(repo, "commit", "-q", "-am", "not the policy")
    assert revision_of(policy) == policy_commit  # the policy's commit, not HEAD

    (policy / "poa_test.rego").write_text((policy / "poa_test.rego").read_text() + "\n# note\n")
    assert revision_of(policy) == policy_commit  # tests are not in the bundle

    data = policy / "data.json"
    data.write_text(data.read_text() + "\n")
    dirty = revision_of(policy)
    assert dirty.startswith(f"{policy_commit}-dirty-")
    data.write_text(data.read_text() + "\n")
    assert revision_of(policy) not in (dirty, policy_commit)  # another content, another revision

    _git(repo, "checkout", "-q", "--", ".")
    (policy / "extra.rego").write_text("package atb.extra\n")
    assert revision_of(policy).startswith(f"{policy_commit}-dirty-")  # untracked bundled file


def test_signing_keys_es256_rs256_and_no_eddsa(policies: Policies, tmp_path: Path) -> None:
    rsa_path = tmp_path / "rsa.pem"
    rsa_path.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    rsa_key = load_signing_key(rsa_path)
    assert rsa_key.algorithm == "RS256"
    assert policies.key.algorithm == "ES256"
    bundle = build_bundle(policies.opa, policies.a_dir, tmp_path / "rsa.tar.gz", rsa_key, run_tests=False).path
    assert verify_bundle(policies.opa, bundle, rsa_key.public_pem, "RS256").signed
    with pytest.raises(PolicyBuildError, match="signature check"):
        verify_bundle(policies.opa, bundle, policies.key.public_pem, "ES256")

    ed_path = tmp_path / "ed25519.pem"
    ed_path.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(PolicyBundleUsageError, match="no EdDSA"):
        load_signing_key(ed_path)


def test_a_policy_whose_tests_fail_is_not_built(policies: Policies) -> None:
    broken = policies.a_dir / "poa_test.rego"
    broken.write_text(broken.read_text() + "\ntest_always_fails if { false }\n")
    out = policies.out / "never.tar.gz"
    with pytest.raises(PolicyBuildError, match="opa test failed"):
        build_bundle(policies.opa, policies.a_dir, out, policies.key)
    assert not out.exists()


def test_the_cli_builds_publishes_lists_rolls_back_and_configures_opa(
    policies: Policies, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ATB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("ATB_POLICY_SIGNING_KEY", raising=False)
    runner = CliRunner()
    store = tmp_path / "store"

    def atb(*args: str) -> str:
        result = runner.invoke(atb_app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    built_a = atb("policy", "build", "--policy-dir", str(policies.a_dir), "--out", str(tmp_path / "a.tar.gz"))
    rev_a = revision_of(policies.a_dir)
    assert f"revision {rev_a}" in built_a
    assert (tmp_path / "state" / "policy" / "signing-key.pem").stat().st_mode & 0o077 == 0  # the dev key, 0600
    public = atb("policy", "key", "--out", str(tmp_path / "public.pem"))
    assert "BEGIN PUBLIC KEY" in public
    atb("policy", "publish", str(tmp_path / "a.tar.gz"), "--to", str(store))
    atb("policy", "build", "--policy-dir", str(policies.b_dir), "--out", str(tmp_path / "b.tar.gz"))
    atb("policy", "publish", str(tmp_path / "b.tar.gz"), "--to", str(store))
    rev_b = revision_of(policies.b_dir)
    assert atb("policy", "revisions", "--dir", str(store)).splitlines() == [f"  {rev_a}", f"* {rev_b}"]
    atb("policy", "rollback", rev_a, "--to", str(store))
    assert served_revision(store) == rev_a

    # A bundle signed with another key is not published.
    foreign = policies.build(policies.b_dir, key=policies.other_key)
    refused = runner.invoke(atb_app, ["policy", "publish", str(foreign), "--to", str(tmp_path / "other-store")])
    assert refused.exit_code == 1, refused.output
    assert "signature check" in refused.output
    assert not (tmp_path / "other-store").exists()

    atb("policy", "opa-config", "--url", "http://store:8282", "--out", str(tmp_path / "opa.json"))
    document = json.loads((tmp_path / "opa.json").read_text())
    assert document["bundles"]["atb"]["signing"] == {"keyid": "atb-policy"}
    assert document["bundles"]["atb"]["persist"] is True
    assert document["keys"]["atb-policy"] == {
        "algorithm": "ES256",
        "key": (tmp_path / "public.pem").read_text(),
    }
    # The same document the OPA of the other tests runs with (opa_config), for this key and store.
    public_pem = (tmp_path / "public.pem").read_text()
    assert document == opa_config(service_url="http://store:8282", public_pem=public_pem, algorithm="ES256")


def test_the_dev_opa_runs_in_bundle_mode_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = DevConfig.from_env()
    monkeypatch.delenv(OPA_CONFIG_ENV, raising=False)
    default = opa_process(config).argv
    assert default[-2:] == ("--watch", str(config.policy_dir))
    monkeypatch.setenv(OPA_CONFIG_ENV, str(tmp_path / "opa.json"))
    bundle_mode = opa_process(config).argv
    assert bundle_mode[-2:] == ("--config-file", str((tmp_path / "opa.json").resolve()))
    assert "--watch" not in bundle_mode
    assert default[:-2] == bundle_mode[:-2]  # same binary, address and flags otherwise


async def test_status_of_an_opa_without_bundles_and_of_one_that_does_not_answer(opa_url: str) -> None:
    """The dev stack's OPA (`--watch`, no status plugin) has no bundle; a closed port is unreachable."""
    [report] = await opa_bundle_reports([opa_url])
    assert (report.bundle, report.revision, report.error) == (None, None, "no bundle loaded")
    assert report.stale("sha256:" + "0" * 64) is True

    runner = CliRunner()
    closed = f"http://{HOST}:{_free_port()}"
    result = await asyncio.to_thread(
        runner.invoke, atb_app, ["policy", "status", "--opa", opa_url, "--opa", closed, "--json"]
    )
    assert result.exit_code == 4, result.output
    rows = json.loads(result.output.split("\natb policy status: error")[0])["instances"]
    assert [r["opa"] for r in rows] == [opa_url, closed]
    assert rows[1]["error"].startswith("unreachable")


async def test_an_s3_bucket_as_the_bundle_store(
    policies: Policies, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publish and roll back in an S3-compatible bucket (versitygw); OPA polls it with S3 signing."""
    import boto3

    binary = await build_versitygw(DevConfig.from_env())
    with LocalS3(binary, tmp_path / "s3") as s3:
        for name, value in (
            ("AWS_ACCESS_KEY_ID", s3.access_key),
            ("AWS_SECRET_ACCESS_KEY", s3.secret_key),
            ("AWS_REGION", s3.region),
            ("AWS_ENDPOINT_URL", s3.endpoint),
        ):
            monkeypatch.setenv(name, value)  # read by the publisher's client and by OPA (started below)
        bucket = f"policy-{secrets.token_hex(4)}"
        boto3.session.Session().client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket=bucket)
        url = f"s3://{bucket}/atb"
        rev_a = s3_publish(policies.build(policies.a_dir), url).revision

        resource = f"atb/{SERVED_NAME}"
        async with _bundle_mode_opa(
            tmp_path, policies, service_url=f"{s3.endpoint}/{bucket}", resource=resource, s3_signing=True
        ) as opa:
            await opa.serves(rev_a)
            rev_b = s3_publish(policies.build(policies.b_dir), url).revision
            await opa.serves(rev_b)
            assert (await opa.requirements())["tier"] == "high"
            s3_rollback(url, rev_a)
            await opa.serves(rev_a)
            assert (await opa.requirements())["policy_version"] == rev_a

        with pytest.raises(PolicyBundleUsageError, match="immutable"):
            s3_publish(policies.build(policies.a_dir, key=policies.other_key), url)
        with pytest.raises(PolicyBundleUsageError, match="never published"):
            s3_rollback(url, "sha256:" + "0" * 64)
