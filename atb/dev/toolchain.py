"""The build tools the dev stack needs and the two things built with them.

* `java` (17+) runs the broker; `mvn` resolves the broker's jars from Maven Central
  into `<cache>/kafka-jars` by the project's own `infra/pom.xml`, with a pinned
  maven-dependency-plugin; a stamp holds the pom's hash so a pom change re-resolves.
* `go` builds OPA (`go install` of the pinned `OPA_VERSION`) into `<cache>/bin`, and
  the S3-compatible server with Object Lock the audit archive is tested against
  (versitygw, Apache-2.0, pinned `VERSITYGW_VERSION`, `build_versitygw`), and the lint
  tools (`LINT_TOOLS`: amtool, the Regal Rego linter) as `GoTool`s.
* `npm` fetches the pinned axe-core (`AXE_CORE`, an `NpmPackage`) from the npm registry
  into `<cache>/npm/`: the console's accessibility test runs it in the browser.

A tool is asked for only when it is needed: with warm caches only `java` is.
This module never downloads anything except through Maven, the Go module proxy and npm.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from atb.dev.config import DevConfig
from atb.dev.errors import ToolchainMissingError, ToolError

__all__ = [
    "AMTOOL",
    "AXE_CORE",
    "DEPENDENCY_PLUGIN",
    "LINT_TOOLS",
    "MIN_JAVA",
    "OPA_MODULE",
    "OPA_VERSION",
    "REGAL",
    "TEST_TOOLS",
    "VERSITYGW",
    "VERSITYGW_MODULE",
    "VERSITYGW_VERSION",
    "GoTool",
    "NpmPackage",
    "Progress",
    "build_opa",
    "build_versitygw",
    "jars_fresh",
    "jars_stamp",
    "opa_fresh",
    "require_java",
    "require_tools",
    "resolve_kafka_jars",
    "run_logged",
    "versitygw_fresh",
]

Progress = Callable[[str], None]

OPA_MODULE = "github.com/open-policy-agent/opa"
OPA_VERSION = "v1.22.4"
VERSITYGW_MODULE = "github.com/versity/versitygw"
VERSITYGW_VERSION = "v1.8.0"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
MIN_JAVA = 17

_INSTALL_HINTS = {
    "java": f"install OpenJDK {MIN_JAVA}+ (apt-get install openjdk-17-jre-headless)",
    "mvn": "install Apache Maven 3.8+ (apt-get install maven)",
    "go": "install Go 1.24+ and put its bin/ directory on PATH",
    "npm": "install Node.js and npm (apt-get install npm)",
}
_STAMP = ".pom.sha256"


def require_tools(tools: Iterable[str]) -> dict[str, str]:
    """Absolute paths of the tools; one ToolchainMissingError naming every missing one."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for tool in dict.fromkeys(tools):
        path = shutil.which(tool)
        if path is None:
            missing.append(f"{tool} not found: {_INSTALL_HINTS.get(tool, f'install {tool}')}")
        else:
            found[tool] = path
    if missing:
        raise ToolchainMissingError("; ".join(missing))
    return found


def require_java() -> str:
    """Path of a java that is at least `MIN_JAVA` (Kafka 4 refuses older ones)."""
    java = require_tools(["java"])["java"]
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False, timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = 0 if match is None else int(match.group(1))
    if major == 1 and match is not None and match.group(2):  # "1.8.0_x" is Java 8
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise ToolchainMissingError(f"java at {java} is version {major or '?'}: {_INSTALL_HINTS['java']}")
    return java


# -- Kafka jars -------------------------------------------------------------------------------


def _pom(config: DevConfig) -> Path:
    return config.repo / "infra" / "pom.xml"


def _pom_hash(config: DevConfig) -> str:
    return hashlib.sha256(_pom(config).read_bytes()).hexdigest()


def jars_stamp(config: DevConfig) -> str:
    """The pom hash the cached jars were resolved from ("" when none)."""
    try:
        return (config.jars_dir / _STAMP).read_text().strip()
    except OSError:
        return ""


def jars_fresh(config: DevConfig) -> bool:
    """True when `<cache>/kafka-jars` was resolved from the current pom."""
    return jars_stamp(config) == _pom_hash(config) and any(config.jars_dir.glob("kafka_*.jar"))


async def run_logged(argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    """Run a build command with its output in `log`; ToolError with the last lines on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env
        )
        code = await proc.wait()
    if code != 0:
        output = await asyncio.to_thread(log.read_text, errors="replace")
        tail = [ln for ln in output.splitlines() if ln.strip()][-3:]
        raise ToolError(f"{Path(argv[0]).name} failed (exit {code}); see {log}: {' | '.join(tail)[:400]}")


async def resolve_kafka_jars(config: DevConfig, progress: Progress | None = None) -> Path:
    """Copy the broker's runtime jars into `<cache>/kafka-jars` unless they match the pom already."""
    if jars_fresh(config):
        return config.jars_dir
    mvn = require_tools(["mvn"])["mvn"]
    if progress:
        progress(f"resolving Kafka jars with Maven from {_pom(config).relative_to(config.repo)} (first run only)")
    # Into a fresh folder, swapped in at the end: a stale jar (e.g. an old slf4j-api)
    # must never survive, and an interrupted run must not look resolved.
    tmp = config.jars_dir.with_name(config.jars_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    await run_logged(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(_pom(config)),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ],
        config.cache_dir / "logs" / "mvn.log",
    )
    (tmp / _STAMP).write_text(_pom_hash(config) + "\n")
    shutil.rmtree(config.jars_dir, ignore_errors=True)
    tmp.rename(config.jars_dir)
    return config.jars_dir


# -- OPA --------------------------------------------------------------------------------------


def _opa_path(config: DevConfig) -> Path:
    return config.bin_dir / "opa"


def opa_fresh(config: DevConfig) -> bool:
    """True when `<cache>/bin/opa` exists and reports `OPA_VERSION`."""
    opa = _opa_path(config)
    if not os.access(opa, os.X_OK):
        return False
    try:
        out = subprocess.run([str(opa), "version"], capture_output=True, text=True, check=False, timeout=30)
    except OSError:
        return False
    return f"Version: {OPA_VERSION.removeprefix('v')}\n" in out.stdout


async def build_opa(config: DevConfig, progress: Progress | None = None) -> Path:
    """`go install` the pinned OPA into `<cache>/bin` unless that exact version is there."""
    if opa_fresh(config):
        return _opa_path(config)
    go = require_tools(["go"])["go"]
    if progress:
        progress(f"building OPA {OPA_VERSION} with go install (first run only, a few minutes cold)")
    config.bin_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(config.bin_dir)}
    await run_logged([go, "install", f"{OPA_MODULE}@{OPA_VERSION}"], config.cache_dir / "logs" / "go-install.log", env)
    if not opa_fresh(config):
        raise ToolError(f"go install did not produce OPA {OPA_VERSION} at {_opa_path(config)}")
    return _opa_path(config)


# -- versitygw (S3 with Object Lock, for the audit archive's tests) ---------------------------


def versitygw_fresh(config: DevConfig) -> bool:
    """True when `<cache>/bin/versitygw` exists and was built from `VERSITYGW_VERSION` (its stamp says so)."""
    return VERSITYGW.fresh(config)


async def build_versitygw(config: DevConfig, progress: Progress | None = None) -> Path:
    """`go install` the pinned versitygw into `<cache>/bin` unless that exact version is there."""
    return await VERSITYGW.build(config, progress)


# -- Pinned Go tools, one way -----------------------------------------------------------------


@dataclass(frozen=True)
class GoTool:
    """A command `go install`ed from the Go module proxy at a pinned version into `<cache>/bin`."""

    name: str
    """The binary's name."""
    package: str
    """The package path `go install` builds (the module path, or a command inside it)."""
    version: str
    cold: str
    """How long a cold build takes here, for the progress line."""
    in_module: bool = False
    """Build with `go build` inside the module as `go mod download` fetched it, instead of
    `go install package@version`. For a module whose version list the Go module proxy does
    not serve: `go install m@v` looks the list up for deprecation notices and fails on it,
    while the exact version downloads. The module's own go.mod and go.sum then pin every
    dependency, as `go install m@v` would; `package` is the module path."""

    def path(self, config: DevConfig) -> Path:
        return config.bin_dir / self.name

    def _stamp(self, config: DevConfig) -> Path:
        return config.bin_dir / f".{self.name}.version"

    def fresh(self, config: DevConfig) -> bool:
        """True when the binary exists and a stamp written after its build names this exact version.

        Go tools built by `go install` often report no exact version (a `git` or major.minor
        string), so the stamp is what proves which one it is.
        """
        if not os.access(self.path(config), os.X_OK):
            return False
        try:
            return self._stamp(config).read_text().strip() == f"{self.package}@{self.version}"
        except OSError:
            return False

    async def build(self, config: DevConfig, progress: Progress | None = None) -> Path:
        """`go install` it unless that exact version is there; the path of the binary."""
        if self.fresh(config):
            return self.path(config)
        go = require_tools(["go"])["go"]
        if progress:
            progress(f"building {self.name} {self.version} with go (first run only, {self.cold})")
        config.bin_dir.mkdir(parents=True, exist_ok=True)
        self._stamp(config).unlink(missing_ok=True)
        env = {**os.environ, "GOBIN": str(config.bin_dir)}
        log = config.cache_dir / "logs" / f"go-install-{self.name}.log"
        if self.in_module:
            await self._build_in_module(go, log, env)
        else:
            await run_logged([go, "install", f"{self.package}@{self.version}"], log, env)
        if not os.access(self.path(config), os.X_OK):
            raise ToolError(f"go install did not produce {self.name} at {self.path(config)} (log: {log})")
        self._stamp(config).write_text(f"{self.package}@{self.version}\n")
        return self.path(config)

    async def _build_in_module(self, go: str, log: Path, env: dict[str, str]) -> None:
        """`go mod download -json package@version`, then `go build` in the folder it names."""
        listing = log.with_name(f"{log.stem}-download.json")
        await run_logged([go, "mod", "download", "-json", f"{self.package}@{self.version}"], listing, env)
        try:
            folder = json.loads(listing.read_text())["Dir"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ToolError(f"go mod download named no folder for {self.package}@{self.version} ({listing})") from exc
        target = str(Path(env["GOBIN"]) / self.name)
        argv = [go, "-C", folder, "build", "-trimpath", "-o", target, "."]
        await run_logged(argv, log, env)


AMTOOL = GoTool(
    "amtool", "github.com/prometheus/alertmanager/cmd/amtool", "v0.35.0", "about 2 min cold, 5 on a busy machine"
)
"""Alertmanager's CLI: `make lint` and the tests check deploy/alertmanager/ routes with it."""

REGAL = GoTool(
    "regal",
    "github.com/styrainc/regal",
    "v0.35.1",
    "about 1.2 min cold, 3.5 on a busy machine (71 s and 195 s measured on 2 cores, empty caches)",
    in_module=True,
)
"""The Rego linter (Apache-2.0): `make lint` runs `regal lint opa/policy` with .regal/config.yaml.
The Go module proxy serves this exact version but not the module's version list, hence
`in_module`."""

LINT_TOOLS: tuple[GoTool, ...] = (AMTOOL, REGAL)
"""What `atb dev tools` (and so `make lint`) builds besides Kafka's jars and OPA."""

VERSITYGW = GoTool(
    "versitygw",
    f"{VERSITYGW_MODULE}/cmd/versitygw",
    VERSITYGW_VERSION,
    "about 1.5 min cold, up to 7 on a busy machine",
)
"""The S3-compatible server with Object Lock (Apache-2.0) the audit archive's tests run (atb/dev/s3.py)."""


@dataclass(frozen=True)
class NpmPackage:
    """A package fetched from the npm registry at a pinned version into `<cache>/npm/<name>/` (no scripts run)."""

    name: str
    version: str
    file: str
    """The file the tests use, inside the package."""

    def folder(self, config: DevConfig) -> Path:
        return config.cache_dir / "npm" / self.name

    def path(self, config: DevConfig) -> Path:
        return self.folder(config) / "node_modules" / self.name / self.file

    def fresh(self, config: DevConfig) -> bool:
        """True when the file is there and the installed package.json names this exact version."""
        manifest = self.folder(config) / "node_modules" / self.name / "package.json"
        try:
            installed = json.loads(manifest.read_text()).get("version")
        except (OSError, ValueError):
            return False
        return installed == self.version and self.path(config).is_file()

    async def build(self, config: DevConfig, progress: Progress | None = None) -> Path:
        """`npm install` the pinned version unless it is there; the path of its file."""
        if self.fresh(config):
            return self.path(config)
        npm = require_tools(["npm"])["npm"]
        if progress:
            progress(f"fetching {self.name} {self.version} with npm (first run only, seconds)")
        folder = self.folder(config)
        folder.mkdir(parents=True, exist_ok=True)
        argv = [npm, "install", "--prefix", str(folder), "--no-save", "--no-audit", "--no-fund", "--ignore-scripts"]
        log = config.cache_dir / "logs" / f"npm-install-{self.name}.log"
        await run_logged([*argv, f"{self.name}@{self.version}"], log)
        if not self.fresh(config):
            raise ToolError(f"npm did not install {self.name} {self.version} at {self.path(config)} (log: {log})")
        return self.path(config)


AXE_CORE = NpmPackage("axe-core", "4.14.1", "axe.min.js")
"""Deque's accessibility rules engine (MPL-2.0): the console's browser test runs it on every page."""

TEST_TOOLS: tuple[GoTool | NpmPackage, ...] = (VERSITYGW, AXE_CORE)
"""What `atb dev tools` also builds for the tests (they build it themselves on first use otherwise)."""
