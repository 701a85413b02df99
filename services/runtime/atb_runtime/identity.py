"""A service's identity: the trust bundle it verifies proofs and certificates against, its SVID, its TLS.

SPIRE renews an X.509-SVID at half its lifetime (an hour by default) and rotates the trust domain's CA;
spiffe-helper and the SPIFFE CSI driver rewrite the files. What a process loads here is recorded in
`identity_files()`, and every `ServiceRunner` runs an `IdentityRenewal` that re-reads a file when it
changes: the SVID and the bundle are renewed in place (every holder signs and verifies with the new
ones) and each TLS context takes the new certificate for its next handshakes. A file that does not load
(half written, a key of another certificate, another SPIFFE ID, an expired leaf) is refused and logged,
and the last good identity stays in use until the next change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import Counter, Gauge

from atb_identity import CredentialError, Svid, TrustBundle, TrustBundleError, bundle_path, ensure_svid, load_svid
from atb_identity.tls import server_context

__all__ = [
    "IDENTITY_RENEWALS",
    "SVID_EXPIRY",
    "IdentityFiles",
    "IdentityRenewal",
    "MissingBundleError",
    "identity_files",
    "load_bundle",
    "server_tls",
    "service_svid",
]

log = logging.getLogger(__name__)

SVID_EXPIRY = Gauge(
    "atb_svid_expiry_timestamp_seconds",
    "When the leaf certificate of the SVID this process signs and serves TLS with expires (unix time)",
    ["spiffe_id"],
)
IDENTITY_RENEWALS = Counter(
    "atb_identity_renewals_total",
    "SVID and trust-bundle files re-read because they changed, by what and outcome (renewed or refused)",
    ["what", "outcome"],
)

Stamp = tuple[tuple[int, int, int] | None, ...]
"""(mtime_ns, size, inode) of each file, None for a missing one: a rewrite or a rename over it changes it."""


def _stamp(*paths: Path) -> Stamp:
    stamps: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            stamps.append(None)
        else:
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


@dataclass
class _SvidFiles:
    svid: Svid
    cert: Path
    key: Path
    stamp: Stamp
    contexts: list[ssl.SSLContext] = field(default_factory=list)


@dataclass
class _BundleFile:
    bundle: TrustBundle | None
    path: Path
    stamp: Stamp
    contexts: list[ssl.SSLContext] = field(default_factory=list)


class IdentityFiles:
    """The files this process took its identity from (a process has one identity: its SVID, its bundle)."""

    def __init__(self) -> None:
        self._svids: list[_SvidFiles] = []
        self._bundles: list[_BundleFile] = []

    def add_svid(self, svid: Svid) -> None:
        if svid.cert_path is None or svid.key_path is None or self._svid_entry(svid) is not None:
            return
        self._svids.append(_SvidFiles(svid, svid.cert_path, svid.key_path, _stamp(svid.cert_path, svid.key_path)))
        SVID_EXPIRY.labels(str(svid.spiffe_id)).set(svid.leaf.not_valid_after_utc.timestamp())

    def add_bundle(self, bundle: TrustBundle | None, path: Path) -> None:
        entry = self._bundle_entry(path)
        if entry is None:
            self._bundles.append(_BundleFile(bundle, path, _stamp(path)))
        elif entry.bundle is None:
            entry.bundle = bundle

    def add_tls(self, context: ssl.SSLContext, svid: Svid, bundle: Path) -> None:
        """A server context presenting `svid`, trusting the bundle file: renewed with them."""
        self.add_svid(svid)
        self.add_bundle(None, bundle)
        svid_entry, bundle_entry = self._svid_entry(svid), self._bundle_entry(bundle)
        if svid_entry is not None:
            svid_entry.contexts.append(context)
        if bundle_entry is not None:
            bundle_entry.contexts.append(context)

    def check(self, now: datetime | None = None) -> list[str]:
        """Re-read every file that changed since it was last read; what was renewed, one line each."""
        at = now or datetime.now(UTC)
        renewed: list[str] = []
        for bundle_entry in self._bundles:
            if (stamp := _stamp(bundle_entry.path)) != bundle_entry.stamp:
                bundle_entry.stamp = stamp
                if line := self._renew_bundle(bundle_entry):
                    renewed.append(line)
        for svid_entry in self._svids:
            if (stamp := _stamp(svid_entry.cert, svid_entry.key)) != svid_entry.stamp:
                svid_entry.stamp = stamp
                if line := self._renew_svid(svid_entry, at):
                    renewed.append(line)
        return renewed

    def _renew_svid(self, entry: _SvidFiles, at: datetime) -> str | None:
        try:
            new = load_svid(entry.cert, entry.key)
            if not new.leaf.not_valid_before_utc <= at < new.leaf.not_valid_after_utc:
                raise CredentialError(f"the leaf of {entry.cert} is not valid now ({at.isoformat()})")
            entry.svid.renew(new)
            for context in entry.contexts:
                context.load_cert_chain(entry.cert, entry.key)
        except (CredentialError, ssl.SSLError, OSError) as exc:
            IDENTITY_RENEWALS.labels("svid", "refused").inc()
            log.warning("SVID files changed but were not taken (the last good SVID stays in use): %s", exc)
            return None
        IDENTITY_RENEWALS.labels("svid", "renewed").inc()
        expires = new.leaf.not_valid_after_utc
        SVID_EXPIRY.labels(str(entry.svid.spiffe_id)).set(expires.timestamp())
        line = f"SVID {entry.svid.spiffe_id} renewed from {entry.cert}, valid until {expires.isoformat()}"
        log.info(line)
        return line

    def _renew_bundle(self, entry: _BundleFile) -> str | None:
        try:
            if entry.bundle is not None:
                entry.bundle.renew(TrustBundle.load(entry.path, entry.bundle.trust_domain))
            for context in entry.contexts:
                # Adds the new roots; a root taken out stays trusted by the TLS handshake until a restart,
                # but not by the SPIFFE checks, which use the renewed bundle.
                context.load_verify_locations(cafile=str(entry.path))
        except (TrustBundleError, ssl.SSLError, OSError) as exc:
            IDENTITY_RENEWALS.labels("bundle", "refused").inc()
            log.warning(
                "trust bundle %s changed but was not taken (the last good one stays in use): %s", entry.path, exc
            )
            return None
        IDENTITY_RENEWALS.labels("bundle", "renewed").inc()
        line = f"trust bundle {entry.path} renewed"
        log.info(line)
        return line

    def _svid_entry(self, svid: Svid) -> _SvidFiles | None:
        return next((e for e in self._svids if e.svid is svid), None)

    def _bundle_entry(self, path: Path) -> _BundleFile | None:
        return next((e for e in self._bundles if e.path == path), None)


_FILES = IdentityFiles()


def identity_files() -> IdentityFiles:
    """This process's identity files (what `service_svid`, `load_bundle` and `server_tls` loaded)."""
    return _FILES


class IdentityRenewal:
    """A runner component: re-reads the identity files every `every_s` seconds (0: never)."""

    def __init__(self, files: IdentityFiles, every_s: float) -> None:
        self._files = files
        self._every = every_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._every > 0:
            self._task = asyncio.create_task(self._run(), name="identity-renewal")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)  # the files give no signal: they are checked on a period
            self._files.check()


class MissingBundleError(FileNotFoundError):
    """No trust bundle where one was expected: the PKI was not set up."""


def load_bundle(configured: Path | None, state_dir: Path, trust_domain: str) -> TrustBundle:
    """The configured bundle (SPIRE writes one), else the dev CA's bundle in the state folder."""
    path = configured or bundle_path(state_dir)
    if not path.exists():
        raise MissingBundleError(
            f"no trust bundle at {path}: run `atb pki init` (dev) or set ATB_TRUST_BUNDLE_PATH to your SPIFFE bundle"
        )
    bundle = TrustBundle.load(path, trust_domain)
    _FILES.add_bundle(bundle, path)
    return bundle


def service_svid(state_dir: Path, service_id: str, cert_path: Path | None, key_path: Path | None) -> Svid:
    """A service's own SVID: the configured files (SPIRE writes them), else one from the dev CA."""
    svid = load_svid(cert_path, key_path) if cert_path is not None and key_path is not None else None
    svid = svid or ensure_svid(state_dir, service_id)
    _FILES.add_svid(svid)
    return svid


def server_tls(svid: Svid, configured_bundle: Path | None, state_dir: Path) -> ssl.SSLContext:
    """The mTLS server context of an HTTPS site: the service's SVID, client certificates checked against
    the configured bundle (else the dev CA's)."""
    if svid.cert_path is None or svid.key_path is None:
        raise ValueError(f"the SVID of {svid.spiffe_id} has no certificate and key files to serve TLS with")
    bundle = configured_bundle or bundle_path(state_dir)
    context = server_context(svid.cert_path, svid.key_path, bundle)
    _FILES.add_tls(context, svid, bundle)
    return context
