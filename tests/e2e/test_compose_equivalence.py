"""docker-compose.yml, run without a Docker engine: every ATB container as a local process.

The test renders `docker-compose config` and, for every ATB service in it (not kafka, postgres,
opa or the one-shot `topics` job, which is run as a command), rebuilds what its container would
be from the compose file and the root Dockerfile. The ATB containers are the seven services and
two `atb` commands: the policy bundle store and OPA's decision-log receiver.

* the image: the files the Dockerfile COPYs (through .dockerignore), the project's packages as
  its wheel would install them (only `*.py` and the declared package data) in a site-packages
  folder outside the checkout, so a default pointing into the checkout (config/, migrations/)
  finds nothing, as in the image;
* the container: the Dockerfile's ENV, the compose `environment`, its entrypoint and command,
  its secrets under /run/secrets, bind mounts, named volumes and tmpfs, each a folder here;
* the operator's part: the secrets the compose file's header says to create (dev PKI trust
  bundle and SVIDs, the issuer's signing key, the Postgres password, the Slack signing secret),
  the header's `atb policy` commands (a signed bundle built, published into the store folder,
  and OPA's configuration written), and the database and role the postgres image's init creates.

OPA is the pinned binary run with the compose service's own command: its configuration file
(the host names in it mapped as Docker's DNS would) polls the `policy-store` process for the
signed bundle and uploads its decisions to the `policy-decision-logs` process. So the services
decide with the published revision, and each decision reaches the audit store.

Every container path in a variable becomes its folder here; the compose host names become the
session's Kafka, OPA and PostgreSQL and the other services' local ports; the topic namespace is
the test's own. Nothing else is added but ports, PYTHONPATH (the image's site-packages) and
ATB_EXIT_WITH_PARENT. A low-, a medium- and a high-risk request then go through the gateway
(mTLS, an agent SVID from the secrets' CA), approvers of config/approvers.json vote, the broker
decides over mTLS, and the audit store in PostgreSQL must hold each request.

What it does not prove: that the images build (no engine here: pip, apt, the base image), the
container runtime's own behaviour (read-only root, dropped capabilities, uid 10001 reading the
secret files, Docker's DNS and healthchecks), or replicas (tests/e2e/test_scale_out.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import tomllib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest
import yaml  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from atb.dev.config import DevConfig
from atb.dev.ports import PortAllocator
from atb.dev.postgres import TempPostgres
from atb.dev.procs import ManagedProcess
from atb.dev.stack import healthz_ready
from atb.dev.toolchain import build_opa
from atb.dev.topics import delete_topics
from atb.policy.decision_logs import DECISION_AUDIT_TYPE
from atb.sdk import ApproverClient, BrokerClient, GatewayClient
from atb_identity import ensure_svid, init_ca, issue_svid
from atb_runtime.ops import LISTEN_FDS_ENV
from audit_sink.adapters.db import audit_events, make_engine
from contracts import (
    AccountableParty,
    AuditEvent,
    BrokerDecision,
    ContractualNecessity,
    Decision,
    IssuanceRequested,
    JsonObject,
    Leg,
    LegitimateInterest,
    PoaIssued,
    Topic,
    VoteChoice,
    decode_envelope,
    topic_name,
)
from tests.e2e.audit_sync import caught_up, request_rows

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
NOT_ATB = ("kafka", "postgres", "opa", "topics", "prometheus", "alertmanager", "grafana")
SERVICES = {"gateway", "approvals", "issuer", "broker", "audit-sink", "chat", "console"}
"""The faststream services."""
COMMANDS = {"policy-store", "policy-decision-logs"}
"""ATB containers that run an `atb` command (built from the same Dockerfile)."""
SITE = "usr/local/lib/python3.11/site-packages"
"""Where the image's pip installs the wheel (python:3.11-slim)."""
BASE_IMAGE_ENV = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
"""What python:3.11-slim sets (its PATH puts the image's python and console scripts first)."""
PY = sys.executable
CONSOLE = {
    "faststream": [PY, "-S", "-m", "faststream"],
    "python": [PY, "-S"],
    "atb": [PY, "-S", "-c", "import sys; from atb.cli import main; sys.argv[0] = 'atb'; sys.exit(main())"],
}
"""The image's programs: the same interpreter, without the checkout's editable install (-S)."""
STATE_DEFAULTS = {"checkpoint_key_path", "chat_db_path", "console_db_path", "console_audit_key_path"}
OPTIONAL_PATHS = {"callback_ca_path"}
"""Path settings whose unset value has a meaning of its own (the system's CAs)."""
WRITTEN_AT_START = {("console", "ATB_CONSOLE_AUDIT_KEY_PATH")}
"""Paths another service writes when it starts (the audit sink's verifier key, in its volume)."""
"""Path settings whose default is inside the state folder (a volume), so they may stay unset."""
PORT_VARS = {
    "ATB_OPS_PORT": "ops",
    "ATB_GATEWAY_PORT": "gateway",
    "ATB_BROKER_PORT": "broker",
    "ATB_CHAT_PORT": "chat",
    "ATB_CONSOLE_PORT": "console",
}
DUMP_ENV = "import json, os; print(json.dumps(dict(os.environ)))"

AGENT = "spiffe://atb.local/agent/crm-assistant"
LOW_LEG = LegitimateInterest(
    ref="LI-2024-001", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-100")
)
MEDIUM_LEG = LegitimateInterest(
    ref="LI-7", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-300")
)
HIGH_LEG = ContractualNecessity(
    ref="MSA-12345",
    description="Pay the invoice",
    jurisdiction="EU",
    accountable_party=AccountableParty(type="employee", id="emp-200"),
)


# --- docker-compose config -------------------------------------------------------------------


def render_compose() -> dict[str, Any]:
    """`docker-compose config`, as data (converted by docker-compose's own interpreter, which has PyYAML)."""
    docker_compose = shutil.which("docker-compose")
    assert docker_compose, "docker-compose not found (apt-get install docker-compose)"
    text = COMPOSE.read_text()
    required = sorted(set(re.findall(r"\$\{(\w+)\}", text)))
    assert not required, f"docker-compose.yml interpolates {required} without a default"
    # Only what an operator would set (header): nothing from this host's environment leaks in.
    env = {"PATH": os.environ["PATH"], "ATB_UID": str(os.getuid()), "ATB_IMAGE_TAG": "compose-test"}
    env |= dict.fromkeys(re.findall(r"\$\{(ATB_\w+_REPLICAS)", text), "1")
    rendered = subprocess.run(
        [docker_compose, "-f", str(COMPOSE), "config"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, f"docker-compose config failed: {rendered.stderr}"
    interpreter = Path(docker_compose).read_text().splitlines()[0].removeprefix("#!").split()
    as_json = subprocess.run(
        [*interpreter, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=rendered.stdout,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    config: dict[str, Any] = json.loads(as_json.stdout)
    return config


def unescape(value: str) -> str:
    """Compose's `$$` is a literal `$` in the container."""
    return value.replace("$$", "$")


# --- the Dockerfile ----------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def expand(value: str, variables: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"Dockerfile: ${name} is not declared (ARG/ENV) where it is used"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, value)


@dataclass
class Stage:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[str, list[str], str]] = field(default_factory=list)
    """(`--from` stage or "" for the build context, sources, destination), this stage's and its parents'."""
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    workdir: str = "/"
    user: str = "root"
    home: str = "/root"


def parse_dockerfile(build_args: Mapping[str, str]) -> dict[str, Stage]:
    """The stages of the root Dockerfile for these build args; the last one is the image (key "")."""
    stages: dict[str, Stage] = {}
    global_args: dict[str, str] = {}
    stage: Stage | None = None
    scope: dict[str, str] = {}
    for word, rest in instructions(DOCKERFILE.read_text()):
        if word == "ARG":
            name, has_default, default = rest.partition("=")
            value = build_args.get(name, default if has_default else global_args.get(name, ""))
            (global_args if stage is None else scope)[name] = value
        elif word == "FROM":
            parts = rest.split()
            base = expand(parts[0], global_args)
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            parent = stages.get(base)
            stage = Stage(name)
            if parent is not None:
                stage.env, stage.copies = dict(parent.env), list(parent.copies)
                stage.cmd, stage.entrypoint = list(parent.cmd), list(parent.entrypoint)
                stage.workdir, stage.user, stage.home = parent.workdir, parent.user, parent.home
            stages[name] = stage
            scope = {}
        else:
            assert stage is not None, f"Dockerfile: {word} before FROM"
            variables = {**scope, **stage.env}
            if word == "ENV":
                tokens = shlex.split(rest)
                pairs = [t.split("=", 1) for t in tokens] if "=" in tokens[0] else [[tokens[0], " ".join(tokens[1:])]]
                for key, value in pairs:
                    stage.env[key] = expand(value, variables)
            elif word == "COPY":
                tokens = [expand(t, variables) for t in shlex.split(rest)]
                origin = next((t.split("=", 1)[1] for t in tokens if t.startswith("--from=")), "")
                paths = [t for t in tokens if not t.startswith("--")]
                stage.copies.append((origin, paths[:-1], paths[-1]))
            elif word in ("CMD", "ENTRYPOINT"):
                argv = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
                if word == "CMD":
                    stage.cmd = argv
                else:
                    stage.entrypoint, stage.cmd = argv, []
            elif word == "WORKDIR":
                stage.workdir = expand(rest, variables)
            elif word == "USER":
                stage.user = expand(rest, variables)
            elif word == "RUN" and (home := re.search(r"useradd .*--home-dir (\S+)", rest)):
                stage.home = home.group(1)
    assert "" in stages, "Dockerfile: the last stage (the image) must have no name"
    return stages


# --- .dockerignore and the build context --------------------------------------------------------


def _pattern(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern(line.lstrip("!").strip("/"))))
    return rules


def in_context(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    sent = True
    for negated, pattern in rules:
        if any(pattern.fullmatch(c) for c in candidates):
            sent = negated
    return sent


def context_files(source: str, rules: list[tuple[bool, re.Pattern[str]]]) -> list[Path]:
    """The files of the build context under `source`; fails when it does not exist or sends nothing."""
    path = REPO / source
    assert path.exists(), f"Dockerfile COPYs {source}, which does not exist"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    sent = [p for p in files if in_context(p.relative_to(REPO).as_posix(), rules)]
    assert sent, f"Dockerfile COPYs {source}, but .dockerignore keeps all of it out of the build context"
    return sent


def copy_into(root: Path, source: str, dest: str, rules: list[tuple[bool, re.Pattern[str]]], workdir: str) -> None:
    target = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
    base = REPO / source
    for file in context_files(source, rules):
        if base.is_file():
            out = root / target.lstrip("/") / file.name if target.endswith("/") else root / target.lstrip("/")
        else:
            out = root / target.lstrip("/") / file.relative_to(base)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, out)


def build_image(stages: Mapping[str, Stage], root: Path) -> None:
    """The image's files: the context COPYs of its stages, and the wheel of the `build` stage installed."""
    rules = dockerignore()
    image = stages[""]
    wheel_copies = [c for c in image.copies if c[0]]
    assert [(o, s) for o, s, _ in wheel_copies] == [("build", ["/wheels/"])], (
        f"the image should install only the build stage's wheel, it copies {wheel_copies}"
    )
    for origin, sources, dest in image.copies:
        for source in [] if origin else sources:
            copy_into(root, source, dest, rules, image.workdir)
    src = root.parent / f"{root.name}-src"
    build = stages["build"]
    for _, sources, dest in build.copies:
        for source in sources:
            copy_into(src, source, dest, rules, build.workdir)
    install_wheel(src / build.workdir.lstrip("/"), root / SITE)
    (root / image.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)  # WORKDIR creates it


def find_packages(where: Path, include: list[str]) -> list[str]:
    """setuptools' `find` (packages.find in pyproject): folders with an __init__.py under `where`, by name."""
    found: list[str] = []
    for folder, dirs, files in os.walk(where):
        if folder != str(where) and "__init__.py" not in files:
            dirs.clear()  # not a package: nothing below it is one either
            continue
        name = Path(folder).relative_to(where).as_posix().replace("/", ".")
        if folder != str(where) and any(fnmatchcase(name, pattern) for pattern in include):
            found.append(name)
    return found


def install_wheel(project: Path, site: Path) -> None:
    """What `pip wheel` then `pip install` of `project` installs: its packages' modules and package data."""
    config = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = config["packages"]["find"]
    data: dict[str, list[str]] = config.get("package-data", {})
    for where in found["where"]:
        for package in find_packages(project / where, found["include"]):
            folder = project / where / package.replace(".", "/")
            patterns = ["*.py", *data.get("*", []), *data.get(package, [])]
            for pattern in patterns:
                for file in folder.glob(pattern):
                    out = site / package.replace(".", "/") / file.relative_to(folder)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, out)


# --- the operator's part -----------------------------------------------------------------------


def create_secrets(config: Mapping[str, Any], project: Path) -> dict[str, Path]:
    """Each secret file the compose file names, made as its header tells an operator; by secret name."""
    header = "\n".join(line for line in COMPOSE.read_text().splitlines() if line.startswith("#"))
    state = project / ".state"
    init_ca(state, "atb.local")
    made: dict[str, Path] = {}
    for name, spec in config.get("secrets", {}).items():
        relative = Path(spec["file"]).relative_to(REPO).as_posix()
        path = project / relative
        svid = re.fullmatch(r"\.state/pki/svids/atb\.local(~[^/]+)/(chain|key)\.pem", relative)
        if relative == ".state/pki/bundle.pem":
            assert "atb pki init" in header, "the header does not say how to make the trust bundle (atb pki init)"
        elif svid:
            spiffe_id = "spiffe://atb.local" + svid.group(1).replace("~", "/")
            assert f"atb pki issue {spiffe_id}" in header, f"the header does not say to issue {spiffe_id} ({name})"
            if not path.exists():
                issue_svid(state, spiffe_id)
        else:
            assert relative in header, f"secret {name}: the header does not say how to create {relative}"
            path.parent.mkdir(parents=True, exist_ok=True)
            if relative.endswith(".pem"):  # openssl genpkey -algorithm ed25519
                key = Ed25519PrivateKey.generate()
                pem = key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
                path.write_bytes(pem)
            else:  # openssl rand -hex 32
                path.write_text(secrets.token_hex(32) + "\n")
        assert path.is_file(), f"secret {name}: {relative} was not created"
        made[name] = path
    return made


def create_audit_database(config: Mapping[str, Any], server: TempPostgres, secret_files: Mapping[str, Path]) -> None:
    """What the postgres image's init does: POSTGRES_USER (a superuser) with the password file, POSTGRES_DB."""
    env = config["services"]["postgres"]["environment"]
    user, database = env["POSTGRES_USER"], env.get("POSTGRES_DB", env["POSTGRES_USER"])
    secret = env["POSTGRES_PASSWORD_FILE"].removeprefix("/run/secrets/")
    password = secret_files[secret].read_text().strip()
    with psycopg.connect(server.url(None, driver=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(f"{verb} ROLE \"{user}\" LOGIN SUPERUSER PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')


def publish_policy(project: Path) -> str:
    """The header's `atb policy` commands, run as written in the operator's checkout; the bundle's revision."""
    header = [line.removeprefix("#").strip() for line in COMPOSE.read_text().splitlines() if line.startswith("#")]
    commands: list[str] = []
    for line in header:
        if commands and commands[-1].endswith("\\"):
            commands[-1] = commands[-1][:-1] + " " + line
        elif line.startswith("atb policy "):
            commands.append(line)
    verbs = [shlex.split(c)[2] for c in commands]
    assert verbs == ["build", "publish", "opa-config"], f"the header's policy steps are {verbs}"
    env = {**os.environ, "ATB_STATE_DIR": str(project / ".state")}
    env.pop("ATB_POLICY_SIGNING_KEY", None)
    for command in commands:
        argv = [str(Path(PY).parent / "atb"), *shlex.split(command)[1:]]
        done = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}: {done.stdout[-1000:]}{done.stderr[-2000:]}"
    with tarfile.open(project / ".state/policy/store/bundles/atb.tar.gz") as bundle:
        member = bundle.extractfile("/.manifest") or bundle.extractfile(".manifest")
        assert member is not None, "the published bundle has no .manifest"
        revision = json.loads(member.read())["revision"]
    assert isinstance(revision, str), revision
    assert revision, "the published bundle has an empty revision"
    return revision


@dataclass
class Opa:
    """The compose `opa` service as the pinned OPA binary: its command, its config file, its tmpfs."""

    argv: list[str]
    port: int
    health: str
    """The healthcheck's URL, on the local port."""


def compose_opa(spec: Mapping[str, Any], binary: Path, work: Path, hosts: Mapping[str, str], port: int) -> Opa:
    mounts: dict[str, Path] = {}
    for volume in spec.get("volumes", []):
        source, target = volume.split(":")[:2]
        assert source.startswith(f"{REPO}/.state/"), f"opa: mounts {source}, which the operator does not make"
        mounts[target] = work / "project" / Path(source).relative_to(REPO)
        assert mounts[target].exists(), f"opa: bind mount {source} -> {target} has no source"
    for tmpfs in spec.get("tmpfs", []):
        point = tmpfs.split(":")[0]
        mounts[point] = work / "tmpfs" / "opa" / point.strip("/")
        mounts[point].mkdir(parents=True, exist_ok=True)
    command = [str(a) for a in spec["command"]]
    config_at = command[command.index("--config-file") + 1]
    text = mounts[config_at].read_text()
    for host, local in hosts.items():  # Docker's DNS: the compose host names in the file
        text = text.replace(f"//{host}", f"//{local}")
    config = json.loads(text)
    persist = config.get("persistence_directory")
    assert persist in mounts, f"opa: persistence_directory {persist} is not a volume or tmpfs (read-only root)"
    config["persistence_directory"] = str(mounts[persist])
    local_config = work / "opa-config.json"
    local_config.write_text(json.dumps(config))
    command[command.index("--config-file") + 1] = str(local_config)
    addr = command.index("--addr") + 1
    assert command[addr].endswith(":8181"), command
    command[addr] = f"127.0.0.1:{port}"
    probe = " ".join(spec["healthcheck"]["test"])
    url = re.search(r"http://127\.0\.0\.1:8181(/[^\"']*)", probe)
    assert url, f"opa: cannot read its healthcheck {probe}"
    return Opa([str(binary), *command], port, f"http://127.0.0.1:{port}{url.group(1)}")


async def http_ok(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
            session.get(url) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


# --- one container as a local process -----------------------------------------------------------


@dataclass
class Container:
    name: str
    root: Path
    """The image's files."""
    mounts: dict[str, Path]
    """Container path -> folder or file here (secrets, binds, volumes, tmpfs)."""
    stage: Stage
    env: dict[str, str]
    """What the container would get: base image, Dockerfile ENV, compose environment."""
    argv: list[str]
    """Entrypoint + command."""
    ports: dict[str, int] = field(default_factory=dict)
    """Local port per site (ops, gateway, broker, chat)."""

    def host_path(self, path: str) -> Path:
        for point in sorted(self.mounts, key=len, reverse=True):
            if path == point or path.startswith(point.rstrip("/") + "/"):
                return self.mounts[point] / path[len(point) :].lstrip("/")
        return self.root / path.lstrip("/")

    def rewrite_paths(self, value: str) -> str:
        """Container paths inside a value (alone, in a sqlite URL, in a shell line) -> their folders here."""
        pattern = r"""(?:^|(?<=[\s"'(=])|(?<=sqlite:///))(/[\w.~+/-]*)"""
        return re.sub(pattern, lambda m: str(self.host_path(m.group(1))), value)


def container(
    name: str, spec: Mapping[str, Any], stages: Mapping[str, Stage], work: Path, secret_files: Mapping[str, Path]
) -> Container:
    image = stages[""]
    root = work / "images" / name
    build_image(stages, root)
    mounts: dict[str, Path] = {}
    for secret in spec.get("secrets", []):
        source = secret["source"]
        target = secret.get("target", source)
        mounts[target if target.startswith("/") else f"/run/secrets/{target}"] = secret_files[source]
    for volume in spec.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("/"):
            host = (
                work / "project" / Path(source).relative_to(REPO)
                if source.startswith(f"{REPO}/.state")
                else Path(source)
            )
            assert host.exists(), f"{name}: bind mount {source} -> {target} has no source"
            mounts[target] = host
        else:
            mounts[target] = work / "volumes" / source
            mounts[target].mkdir(parents=True, exist_ok=True)
    for tmpfs in spec.get("tmpfs", []):
        point = tmpfs.split(":")[0]  # options (uid=, mode=) after the path
        mounts[point] = work / "tmpfs" / name / point.strip("/")
        mounts[point].mkdir(parents=True, exist_ok=True)
    env = {
        **BASE_IMAGE_ENV,
        "HOME": image.home,
        **image.env,
        **{k: str(v) for k, v in spec.get("environment", {}).items()},
    }
    entrypoint = [unescape(a) for a in spec.get("entrypoint", image.entrypoint)]
    command = [unescape(a) for a in spec.get("command", [] if "entrypoint" in spec else image.cmd)]
    return Container(name, root, mounts, image, env, [*entrypoint, *command])


def app_of(argv: list[str]) -> str:
    """The faststream app a container runs (`<pkg>.main:app`)."""
    apps = [a for a in argv if re.fullmatch(r"\w+\.main:app", a)]
    assert len(apps) == 1, f"cannot tell which app {argv} runs"
    return apps[0]


def settings_probe(c: Container) -> dict[str, Any]:
    """The service's settings as the image would load them, with the container's own environment."""
    package = app_of(c.argv).split(".")[0]
    probe = (
        "import json, sys, importlib, pathlib\n"
        "from atb_runtime.settings import CommonSettings\n"
        f"m = importlib.import_module('{package}.settings')\n"
        "cls = [v for v in vars(m).values() if isinstance(v, type) and issubclass(v, CommonSettings)"
        " and v is not CommonSettings][0]\n"
        "s = cls()\n"
        "out = {}\n"
        "for name, f in cls.model_fields.items():\n"
        "    v = getattr(s, name)\n"
        "    out[name] = {'path': 'Path' in str(f.annotation), 'value': None if v is None else str(v),"
        " 'default': None if f.default is None else str(f.default)}\n"
        "print(json.dumps(out))\n"
    )
    env = {**c.env, "PYTHONPATH": f"{c.root / SITE}:{sysconfig.get_paths()['purelib']}"}
    done = subprocess.run([*CONSOLE["python"], "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{c.name}: its settings do not load from the compose environment: {done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def allocate_ports(c: Container, ports: PortAllocator) -> None:
    """A local port for every site the container serves (its ATB_*_PORT variables)."""
    for var, site in PORT_VARS.items():
        value = c.env.get(var, "0")
        if value.isdigit() and int(value):
            c.ports[site] = ports.allocate()


def local_env(c: Container, hosts: Mapping[str, str], namespace: str) -> dict[str, str]:
    """The container's environment with its paths, host names and ports mapped to this machine."""
    env: dict[str, str] = {}
    for key, value in c.env.items():
        if key in PORT_VARS and PORT_VARS[key] in c.ports:
            value = str(c.ports[PORT_VARS[key]])
        elif key.startswith("ATB_") and key.endswith("_HOST") and value == "0.0.0.0":  # noqa: S104
            value = "127.0.0.1"
        elif key == "ATB_TOPIC_NAMESPACE":
            value = namespace
        elif key == "PATH":
            value = f"{Path(PY).parent}:/usr/bin:/bin"
        else:
            for host, local in hosts.items():
                value = re.sub(rf"(?<![\w.-]){re.escape(host)}(?!\d)", local, value)
            value = c.rewrite_paths(value)
        env[key] = value
    env["PYTHONPATH"] = f"{c.root / SITE}:{sysconfig.get_paths()['purelib']}"
    env["ATB_EXIT_WITH_PARENT"] = str(os.getpid())
    return env


def service_argv(c: Container, env: dict[str, str]) -> list[str]:
    """The local argv; a `/bin/sh -c '...' exec "$@"` entrypoint is run for real first and what it exports kept."""
    argv = c.argv
    if argv[:2] == ["/bin/sh", "-c"]:
        script, argv0, command = argv[2], argv[3], argv[4:]
        assert script.rstrip().endswith('exec "$@"'), f"{c.name}: the entrypoint does not end by running its command"
        done = subprocess.run(
            ["/bin/sh", "-c", c.rewrite_paths(script), argv0, *CONSOLE["python"], "-c", DUMP_ENV],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, f"{c.name}: its entrypoint failed: {done.stderr}"
        exported = json.loads(done.stdout)
        for key, value in exported.items():
            if env.get(key) != value and key not in ("PWD", "SHLVL", "_", "OLDPWD"):
                env[key] = value
        argv = command
    assert argv, f"{c.name}: runs nothing (no entrypoint, command or CMD)"
    assert argv[0] in CONSOLE, f"{c.name}: runs {argv}, not a program of the image this test knows"
    if argv[0] == "atb":  # an `atb` command: container paths in its options, its port local
        argv = [c.rewrite_paths(a) for a in argv]
        for i, a in enumerate(argv[:-1]):
            if a == "--host" and argv[i + 1] == "0.0.0.0":  # noqa: S104
                argv[i + 1] = "127.0.0.1"
            elif a == "--port":
                argv[i + 1] = str(c.ports["http"])
    return [*CONSOLE[argv[0]], *argv[1:]]


def command_port(c: Container) -> int:
    """The port an `atb` command's container serves (its --port)."""
    assert "--port" in c.argv, f"{c.name}: serves no --port"
    return int(c.argv[c.argv.index("--port") + 1])


# --- the test -----------------------------------------------------------------------------------


@dataclass
class Stack:
    containers: dict[str, Container]
    envs: dict[str, dict[str, str]]
    processes: dict[str, ManagedProcess]
    secret_files: dict[str, Path]
    state: Path
    """The operator's .state/ (the dev PKI the secrets come from)."""
    audit_url: str
    namespace: str
    kafka: str
    revision: str
    """The policy revision published into the store (the header's `atb policy build`)."""


@pytest.fixture
async def compose_stack(
    kafka_bootstrap: str,
    opa_url: str,
    postgres_server: TempPostgres,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    config = render_compose()
    services = config["services"]
    atb = [name for name in services if name not in NOT_ATB]
    assert set(atb) == SERVICES | COMMANDS, atb
    secret_files = create_secrets(config, tmp_path / "project")
    revision = publish_policy(tmp_path / "project")
    create_audit_database(config, postgres_server, secret_files)
    namespace = f"c{secrets.token_hex(4)}."
    ports = PortAllocator()
    containers: dict[str, Container] = {}
    for name in [*atb, "topics"]:
        build = services[name]["build"]
        assert Path(build["dockerfile"]) == Path("Dockerfile"), f"{name}: build from the root Dockerfile"
        stages = parse_dockerfile(build.get("args", {}))
        containers[name] = container(name, services[name], stages, tmp_path, secret_files)
    # Every service's settings, as the image loads them: no path left to a checkout default, no dev default URL.
    problems: list[str] = []
    for name in sorted(SERVICES):
        for setting, info in settings_probe(containers[name]).items():
            var = f"ATB_{setting.upper()}"
            if info["path"] and info["value"] is None and setting not in STATE_DEFAULTS | OPTIONAL_PATHS:
                problems.append(f"{name}: {var} is unset (its default is not in the image, or a self-minted dev SVID)")
            if (
                info["value"]
                and re.search(r"//(127\.0\.0\.1|localhost)[:/]", info["value"])
                and info["value"] == info["default"]
            ):
                problems.append(f"{name}: {var} keeps its dev default {info['value']}")
            if (
                info["path"]
                and info["value"]
                and var.endswith(("_PATH", "_FILE", "_DIR"))
                and not containers[name].host_path(info["value"]).exists()
                and (name, var) not in WRITTEN_AT_START
            ):
                problems.append(f"{name}: {var}={info['value']} does not exist in the container")
    assert not problems, "docker-compose.yml:\n" + "\n".join(problems)
    # Service-to-service addresses: `<service>:<container port>` -> its local port.
    pg = f"{postgres_server.host}:{postgres_server.port}"
    opa_port = ports.allocate()
    hosts = {"kafka:9092": kafka_bootstrap, "postgres:5432": pg, "opa:8181": f"127.0.0.1:{opa_port}"}
    for name in sorted(COMMANDS):
        containers[name].ports["http"] = ports.allocate()
        hosts[f"{name}:{command_port(containers[name])}"] = f"127.0.0.1:{containers[name].ports['http']}"
    for name in sorted(SERVICES):
        allocate_ports(containers[name], ports)
        for var, site in PORT_VARS.items():
            if site in containers[name].ports:
                hosts[f"{name}:{containers[name].env[var]}"] = f"127.0.0.1:{containers[name].ports[site]}"
    envs = {name: local_env(containers[name], hosts, namespace) for name in [*atb, "topics"]}
    for name, env in envs.items():
        leftover = [f"{k}={v}" for k, v in env.items() if re.search(rf"(?:^|[/@,])(?:{'|'.join(services)}):\d+", v)]
        assert not leftover, f"{name}: still names a compose host: {leftover}"
    # The one-shot job first, as `depends_on: service_completed_successfully` orders it.
    topics = containers["topics"]
    done = await asyncio.to_thread(
        subprocess.run,
        service_argv(topics, envs["topics"]),
        env=envs["topics"],
        cwd=topics.host_path(topics.stage.workdir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"topics job failed: {done.stderr[-2000:]}"
    processes: dict[str, ManagedProcess] = {}
    for name in sorted(COMMANDS):  # `atb` commands bind their own --port (no socket handed down)
        c = containers[name]
        ports.release(c.ports["http"])
        url = f"http://127.0.0.1:{c.ports['http']}/healthz"
        processes[name] = ManagedProcess(
            name,
            service_argv(c, envs[name]),
            envs[name],
            log_path=tmp_path / "logs" / f"{name}.log",
            pid_path=tmp_path / "logs" / f"{name}.pid",
            ready=lambda url=url: http_ok(url),  # type: ignore[misc]
            cwd=c.host_path(c.stage.workdir),
        )
    opa = compose_opa(services["opa"], await build_opa(DevConfig.from_env()), tmp_path, hosts, opa_port)
    ports.release(opa_port)
    processes["opa"] = ManagedProcess(
        "opa",
        opa.argv,
        {"PATH": "/usr/bin:/bin"},
        log_path=tmp_path / "logs" / "opa.log",
        pid_path=tmp_path / "logs" / "opa.pid",
        ready=lambda: http_ok(opa.health),
        cwd=tmp_path,
    )
    for name in sorted(SERVICES):
        c = containers[name]
        env = envs[name]
        held = ports.held(c.ports.values())
        env[LISTEN_FDS_ENV] = ",".join(map(str, held))
        argv = service_argv(c, env)
        sites = dict(c.ports)

        def ready(proc_name: str = name, served: dict[str, int] = sites) -> Any:
            return healthz_ready(processes[proc_name], served)

        processes[name] = ManagedProcess(
            name,
            argv,
            env,
            log_path=tmp_path / "logs" / f"{name}.log",
            pid_path=tmp_path / "logs" / f"{name}.pid",
            ready=ready,
            cwd=c.host_path(c.stage.workdir),
            pass_fds=held,
        )
    audit_env = envs["audit-sink"]
    assert audit_env.get("PGPASSWORD") == secret_files["audit_db_password"].read_text().strip(), (
        "the audit sink does not get the database password (PGPASSWORD) from its secret"
    )
    user = f"{config['services']['postgres']['environment']['POSTGRES_USER']}:{audit_env['PGPASSWORD']}"
    audit_url = audit_env["ATB_AUDIT_DB_URL"].replace("://atb@", f"://{user}@")
    try:
        # In depends_on order: the store and the receiver, OPA (healthy once the signed bundle is
        # active), then the services.
        await asyncio.gather(*(processes[name].start(ready_timeout=60) for name in sorted(COMMANDS)))
        await processes["opa"].start(ready_timeout=120)
        await asyncio.gather(*(processes[name].start(ready_timeout=60) for name in sorted(SERVICES)))
        yield Stack(
            containers,
            envs,
            processes,
            secret_files,
            tmp_path / "project" / ".state",
            audit_url,
            namespace,
            kafka_bootstrap,
            revision,
        )
    finally:
        await asyncio.gather(*(p.stop() for p in processes.values()))
        ports.close()
        await delete_topics(kafka_bootstrap, namespace)


def _no_dev_ca(stack: Stack) -> None:
    """A service without its SVID would mint its own dev CA in its state volume."""
    minted = [name for name, c in stack.containers.items() if c.host_path("/var/lib/atb/pki/ca").exists()]
    assert not minted, f"{minted} minted their own dev CA (no SVID secret): the others refuse their proofs"


async def test_the_compose_stack_starts_and_serves_low_medium_and_high_risk(compose_stack: Stack) -> None:
    stack = compose_stack
    bundle = stack.secret_files["trust_bundle"]
    gateway = stack.containers["gateway"].ports["gateway"]
    broker = stack.containers["broker"].ports["broker"]
    agent = ensure_svid(stack.state, AGENT)
    requests: list[tuple[str, str, str, Leg, JsonObject, list[str]]] = [
        ("low", "crm.contact.read", "crm:contact/1", LOW_LEG, {"f": ["name"]}, []),
        ("medium", "crm.contact.update", "crm:contact/2", MEDIUM_LEG, {}, ["carol"]),
        ("high", "sap.payment.execute", "sap:invoice/4711", HIGH_LEG, {"amount_cents": 120000}, ["alice", "bob"]),
    ]
    async with (
        GatewayClient(svid=agent, bundle_path=bundle, base_url=f"https://127.0.0.1:{gateway}") as gw,
        BrokerClient(svid=agent, bundle_path=bundle, base_url=f"https://127.0.0.1:{broker}") as br,
    ):
        for tier, action, resource, leg, params, approvers in requests:
            request_id = await gw.request_poa(action, resource, tenant="acme", leg=leg, params=params)
            for approver in approvers:
                svid = ensure_svid(stack.state, f"spiffe://atb.local/user/{approver}")
                async with ApproverClient(
                    svid=svid, bootstrap=stack.kafka, namespace=stack.namespace, bundle_path=bundle
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
            # Decided by the signed bundle OPA polled from policy-store (files would answer the data's version).
            assert decision.policy_version == stack.revision, (tier, decision.policy_version, stack.revision)
            for kind in (IssuanceRequested, PoaIssued, BrokerDecision):  # on Kafka, then stored by the sink
                rows = await request_rows(stack.kafka, stack.namespace, stack.audit_url, request_id, kind)
                assert rows, f"{tier}: the audit store holds no {kind.__name__} for {request_id}"
    # OPA uploaded its decisions to policy-decision-logs, which wrote them to atb.audit (signed), and
    # the audit sink stored them with the revision.
    paths = {"atb/poa/requirements", "atb/poa/decisions"}
    logged = await _decision_logs(stack.kafka, stack.namespace, stack.revision, paths)
    await caught_up(stack.kafka, stack.namespace, stack.audit_url)
    query = select(audit_events.c.event_id, audit_events.c.raw).where(audit_events.c.audit_type == DECISION_AUDIT_TYPE)
    with make_engine(stack.audit_url).connect() as conn:
        stored = {row.event_id: orjson.loads(row.raw)["data"]["details"] for row in conn.execute(query)}
    assert set(logged) <= set(stored), "the audit store lacks decision-log events that are on atb.audit"
    assert {stored[i]["path"] for i in logged} == paths
    assert all(stored[i]["revision"] == stack.revision for i in logged)
    # The console's compliance view reads the audit store with the sink's verifier key, from the sink's volume.
    console = stack.containers["console"]
    key = console.host_path(console.env["ATB_CONSOLE_AUDIT_KEY_PATH"])
    assert key.is_file(), f"the console's verifier key {key} is not where the audit sink writes it"
    assert stack.envs["console"].get("PGPASSWORD") == stack.secret_files["audit_db_password"].read_text().strip()
    _no_dev_ca(stack)
    assert all(p.is_running() for p in stack.processes.values()), "a service died during the run"


async def _decision_logs(bootstrap: str, namespace: str, revision: str | None, paths: set[str]) -> set[str]:
    """Read atb.audit until a policy_decision_logged (of `revision`, when given) for each of `paths` arrives:
    their event ids."""
    topic = topic_name(Topic.AUDIT, namespace)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    found: dict[str, str] = {}
    deadline = time.monotonic() + 90  # OPA uploads every 1-10 s (atb policy opa-config)
    try:
        while set(found.values()) != paths and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    envelope = decode_envelope(record.value or b"")
                    if envelope.type != AuditEvent.event_type:
                        continue
                    event = AuditEvent.model_validate(envelope.data)
                    if event.audit_type == DECISION_AUDIT_TYPE and revision in (None, event.details.get("revision")):
                        assert envelope.source == "spiffe://atb.local/svc/policy-decision-logs", envelope.source
                        found[envelope.id] = str(event.details["path"])
    finally:
        await consumer.stop()
    assert set(found.values()) == paths, (
        f"decision logs on atb.audit: {sorted(set(found.values()))}, want {sorted(paths)}"
    )
    return set(found)


def test_every_path_the_dockerfile_copies_is_in_the_build_context() -> None:
    rules = dockerignore()
    for service in ("gateway", "approvals", "issuer", "broker", "audit-sink", "chat"):
        stages = parse_dockerfile({"SERVICE": service})
        for stage in stages.values():
            for origin, sources, _ in stage.copies:
                for source in [] if origin else sources:
                    context_files(source, rules)
        assert stages[""].cmd == ["faststream", "run", f"{service.replace('-', '_')}.main:app"], stages[""].cmd


def test_prometheus_scrapes_every_atb_container_on_its_metrics_port() -> None:
    """Every ATB container that serves /metrics is a scrape job of deploy/prometheus/prometheus.yml, by its
    DNS name (every replica) and the port its /metrics is on: the ops port, or the receiver's --port. (The
    development bundle store serves files only.)"""
    config = render_compose()
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    targets = {
        (name, int(sd["port"])) for job in scrape for sd in job.get("dns_sd_configs", []) for name in sd["names"]
    }
    services = config["services"]
    for name in sorted(SERVICES | {"policy-decision-logs"}):
        spec = services[name]
        command = [str(a) for a in spec.get("command", [])]
        port = (
            int(command[command.index("--port") + 1]) if name in COMMANDS else int(spec["environment"]["ATB_OPS_PORT"])
        )
        assert (name, port) in targets, f"prometheus.yml does not scrape {name}:{port}"
    static = {t for job in scrape for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert "opa:8181" in static, "prometheus.yml does not scrape OPA (bundle and decision-log metrics)"
