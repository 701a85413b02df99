"""The Go tools that check the Helm chart (deploy/helm/atb), built into `<cache>/bin` like OPA.

* `helm`: `go install helm.sh/helm/v4/cmd/helm@HELM_VERSION` from the Go module proxy, a
  `toolchain.GoTool` (pinned, a stamp names the exact version: a `go install`ed Helm reports only
  major.minor).
* `atb-kube-validate`: the project's own strict offline validator (deploy/helm/validate/, a Go
  module pinned to one k8s.io/api), built with `go build -mod=readonly`; a stamp beside the binary
  holds the hash of its sources, so a change to them (or to the pinned API) rebuilds it.

Each is built only when missing or stale; with warm caches neither asks for `go`. `atb dev tools`
builds both (CHART_TOOLS); the chart tests call `build_chart_tools` too, so they never depend on
the order things ran in.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from atb.dev.config import DevConfig
from atb.dev.toolchain import GoTool, Progress, require_tools, run_logged

__all__ = [
    "CHART_TOOLS",
    "HELM",
    "HELM_MODULE",
    "HELM_VERSION",
    "VALIDATOR",
    "Validator",
    "build_chart_tools",
    "build_helm",
    "build_validator",
]

HELM_MODULE = "helm.sh/helm/v4"
HELM_VERSION = "v4.3.2"
HELM = GoTool("helm", f"{HELM_MODULE}/cmd/helm", HELM_VERSION, "about 4 min cold, 6 on a busy machine")
"""Helm: `make lint`'s chart checks and the chart tests render with it."""


@dataclass(frozen=True)
class Validator:
    """atb-kube-validate, built from deploy/helm/validate with `go build` (not `go install`: it is
    the project's own module, pinned by its go.mod and go.sum)."""

    name: str = "atb-kube-validate"

    def source(self, config: DevConfig) -> Path:
        return config.repo / "deploy" / "helm" / "validate"

    def path(self, config: DevConfig) -> Path:
        return config.bin_dir / self.name

    def _stamp(self, config: DevConfig) -> Path:
        return config.bin_dir / f".{self.name}.sha256"

    def source_hash(self, config: DevConfig) -> str:
        digest = hashlib.sha256()
        for file in sorted(p for p in self.source(config).iterdir() if p.suffix in (".go", ".mod", ".sum")):
            digest.update(file.name.encode() + b"\0" + file.read_bytes() + b"\0")
        return digest.hexdigest()

    def fresh(self, config: DevConfig) -> bool:
        """True when the binary exists and was built from the current sources."""
        if not os.access(self.path(config), os.X_OK):
            return False
        try:
            return self._stamp(config).read_text().strip() == self.source_hash(config)
        except OSError:
            return False

    async def build(self, config: DevConfig, progress: Progress | None = None) -> Path:
        """`go build` it into `<cache>/bin` unless built from the same sources; the binary's path."""
        if await asyncio.to_thread(self.fresh, config):
            return self.path(config)
        go = require_tools(["go"])["go"]
        if progress:
            progress(f"building {self.name} (k8s.io/api pinned in deploy/helm/validate/go.mod; first run only)")
        config.bin_dir.mkdir(parents=True, exist_ok=True)
        self._stamp(config).unlink(missing_ok=True)
        source_hash = self.source_hash(config)
        src, out = str(self.source(config)), str(self.path(config))
        log = config.cache_dir / "logs" / f"go-build-{self.name}.log"
        # -mod=readonly: go.mod and go.sum are the pin; a build never rewrites them.
        await run_logged([go, "-C", src, "build", "-mod=readonly", "-trimpath", "-o", out, "."], log)
        self._stamp(config).write_text(source_hash + "\n")
        return self.path(config)


VALIDATOR = Validator()
"""The strict offline validator of rendered manifests (docs/deploy-kubernetes.md §6)."""

CHART_TOOLS: tuple[GoTool | Validator, ...] = (HELM, VALIDATOR)
"""Helm and the validator, in build order."""


async def build_helm(config: DevConfig, progress: Progress | None = None) -> Path:
    """The pinned Helm in `<cache>/bin`, built unless that exact version is there."""
    return await HELM.build(config, progress)


async def build_validator(config: DevConfig, progress: Progress | None = None) -> Path:
    """atb-kube-validate in `<cache>/bin`, built unless built from the current sources."""
    return await VALIDATOR.build(config, progress)


async def build_chart_tools(config: DevConfig, progress: Progress | None = None) -> tuple[Path, Path]:
    """Helm and the validator, each built only when missing or stale: (helm, validator)."""
    return await build_helm(config, progress), await build_validator(config, progress)
