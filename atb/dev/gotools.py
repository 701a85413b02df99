"""The Go tools that check the Helm chart (deploy/helm/atb), built into `<cache>/bin` like OPA.

* `helm`: `go install helm.sh/helm/v4/cmd/helm@HELM_VERSION` (the Go module proxy only).
* `atb-kube-validate`: the project's own strict offline validator (deploy/helm/validate/, a Go
  module pinned to one k8s.io/api), built with `go build`; a stamp beside the binary holds the
  hash of its sources, so a change to them (or to the pinned API) rebuilds it.

Each is built only when missing or stale; with warm caches neither asks for `go`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from atb.dev.config import DevConfig
from atb.dev.errors import ToolError
from atb.dev.toolchain import Progress, require_tools, run_logged

__all__ = [
    "CHART_TOOLS",
    "HELM_MODULE",
    "HELM_VERSION",
    "VALIDATOR",
    "ChartTool",
    "build_chart_tools",
    "build_helm",
    "build_validator",
    "helm_fresh",
    "helm_path",
    "validator_fresh",
    "validator_path",
]

HELM_MODULE = "helm.sh/helm/v4"
HELM_VERSION = "v4.3.2"
VALIDATOR = "atb-kube-validate"
_VALIDATOR_STAMP = f".{VALIDATOR}.sha256"
_HELM_STAMP = ".helm.version"


def _validator_src(config: DevConfig) -> Path:
    return config.repo / "deploy" / "helm" / "validate"


def helm_path(config: DevConfig) -> Path:
    return config.bin_dir / "helm"


def validator_path(config: DevConfig) -> Path:
    return config.bin_dir / VALIDATOR


def helm_fresh(config: DevConfig) -> bool:
    """True when `<cache>/bin/helm` runs and was built from `HELM_VERSION` (its stamp).

    A `go install`ed Helm reports only major.minor (`v4.3`): the stamp written after the build
    holds the exact module version, and the binary must still report that major.minor.
    """
    helm = helm_path(config)
    if not os.access(helm, os.X_OK):
        return False
    try:
        stamp = (config.bin_dir / _HELM_STAMP).read_text().strip()
        out = subprocess.run(
            [str(helm), "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except OSError:
        return False
    major_minor = ".".join(HELM_VERSION.split(".")[:2])
    return stamp == HELM_VERSION and out.returncode == 0 and out.stdout.strip() in (HELM_VERSION, major_minor)


def _validator_hash(config: DevConfig) -> str:
    src = _validator_src(config)
    digest = hashlib.sha256()
    for file in sorted(p for p in src.iterdir() if p.suffix in (".go", ".mod", ".sum")):
        digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def validator_fresh(config: DevConfig) -> bool:
    """True when `<cache>/bin/atb-kube-validate` was built from the current sources."""
    if not os.access(validator_path(config), os.X_OK):
        return False
    try:
        stamp = (config.bin_dir / _VALIDATOR_STAMP).read_text().strip()
    except OSError:
        return False
    return stamp == _validator_hash(config)


async def build_helm(config: DevConfig, progress: Progress | None = None) -> Path:
    """`go install` the pinned Helm into `<cache>/bin` unless that exact version is there."""
    if await asyncio.to_thread(helm_fresh, config):
        return helm_path(config)
    go = require_tools(["go"])["go"]
    if progress:
        progress(f"building Helm {HELM_VERSION} with go install (first run only, a few minutes cold)")
    config.bin_dir.mkdir(parents=True, exist_ok=True)
    stamp = config.bin_dir / _HELM_STAMP
    stamp.unlink(missing_ok=True)
    env = {**os.environ, "GOBIN": str(config.bin_dir)}
    log = config.cache_dir / "logs" / "go-install-helm.log"
    await run_logged([go, "install", f"{HELM_MODULE}/cmd/helm@{HELM_VERSION}"], log, env)
    stamp.write_text(HELM_VERSION + "\n")
    if not await asyncio.to_thread(helm_fresh, config):
        raise ToolError(f"go install did not produce Helm {HELM_VERSION} at {helm_path(config)}")
    return helm_path(config)


async def build_validator(config: DevConfig, progress: Progress | None = None) -> Path:
    """`go build` deploy/helm/validate into `<cache>/bin` unless built from the same sources."""
    if await asyncio.to_thread(validator_fresh, config):
        return validator_path(config)
    go = require_tools(["go"])["go"]
    if progress:
        progress(f"building {VALIDATOR} (k8s.io/api, pinned in deploy/helm/validate/go.mod; first run only)")
    config.bin_dir.mkdir(parents=True, exist_ok=True)
    stamp = config.bin_dir / _VALIDATOR_STAMP
    stamp.unlink(missing_ok=True)
    source_hash = _validator_hash(config)
    # -mod=readonly: go.mod and go.sum are the pin; a build never rewrites them.
    src, out = str(_validator_src(config)), str(validator_path(config))
    log = config.cache_dir / "logs" / f"go-build-{VALIDATOR}.log"
    await run_logged([go, "-C", src, "build", "-mod=readonly", "-trimpath", "-o", out, "."], log)
    stamp.write_text(source_hash + "\n")
    return validator_path(config)


async def build_chart_tools(config: DevConfig, progress: Progress | None = None) -> tuple[Path, Path]:
    """Helm and the validator, each built only when missing or stale: (helm, validator)."""
    return await build_helm(config, progress), await build_validator(config, progress)


@dataclass(frozen=True)
class ChartTool:
    """One of the chart's tools, by name: what `atb dev tools` can build beside the others."""

    name: str
    builder: Callable[[DevConfig, Progress | None], Awaitable[Path]]
    is_fresh: Callable[[DevConfig], bool]
    locate: Callable[[DevConfig], Path]

    async def build(self, config: DevConfig, progress: Progress | None = None) -> Path:
        return await self.builder(config, progress)

    def fresh(self, config: DevConfig) -> bool:
        return self.is_fresh(config)

    def path(self, config: DevConfig) -> Path:
        return self.locate(config)


CHART_TOOLS: tuple[ChartTool, ...] = (
    ChartTool("helm", build_helm, helm_fresh, helm_path),
    ChartTool(VALIDATOR, build_validator, validator_fresh, validator_path),
)
"""Helm and the strict validator, in build order."""
