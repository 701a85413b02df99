"""Build, sign and read policy bundles with the pinned OPA (`opa build`).

A bundle is `opa build -b <policy folder>`: the Rego modules and `data.json`, a
`.manifest` with the revision, and `.signatures.json` (one JWT over the SHA-256 of
every file, signed with the policy signing key, `kid` = the key id OPA's
configuration names). `*_test.rego` stays out of it. `opa test` runs first: a
policy whose tests fail is never built.

Revision (`revision_of`): in a git checkout, the last commit that touched the
policy folder; with uncommitted changes to a bundled file, that commit plus
`-dirty-` and the first 12 hex of the content hash (two different dirty builds
never share a revision); outside git, `sha256:<content hash>`. The content hash
covers the relative path and bytes of every bundled file, in path order.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from atb.policy.errors import PolicyBuildError, PolicyBundleUsageError
from atb.policy.keys import DEFAULT_KEY_ID, BundleSigningKey

__all__ = [
    "REVISION_RE",
    "BuiltBundle",
    "BundleInfo",
    "build_bundle",
    "bundled_files",
    "content_hash",
    "read_bundle",
    "read_bundle_bytes",
    "revision_of",
    "run_opa_tests",
    "verify_bundle",
]

REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")
"""What a revision may look like: it names a file (`revisions/<rev>.tar.gz`) and a Prometheus label."""

_TEST_SUFFIX = "_test.rego"
_TIMEOUT_S = 120


@dataclass(frozen=True)
class BuiltBundle:
    path: Path
    revision: str
    algorithm: str
    key_id: str


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle file says about itself (nothing here is verified: see `verify_bundle`)."""

    revision: str
    signed: bool
    files: tuple[str, ...]


def bundled_files(policy_dir: Path) -> list[Path]:
    """Every file `atb policy build` puts in the bundle: all but hidden files and `*_test.rego`."""
    found = []
    for path in sorted(policy_dir.rglob("*")):
        rel = path.relative_to(policy_dir)
        if (
            path.is_file()
            and not any(part.startswith(".") for part in rel.parts)
            and not path.name.endswith(_TEST_SUFFIX)
        ):
            found.append(path)
    return found


def content_hash(policy_dir: Path) -> str:
    """SHA-256 (hex) over the relative path and the SHA-256 of every bundled file, in path order."""
    outer = hashlib.sha256()
    for path in bundled_files(policy_dir):
        outer.update(path.relative_to(policy_dir).as_posix().encode() + b"\0")
        outer.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return outer.hexdigest()


def _git(policy_dir: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(policy_dir), *args], capture_output=True, text=True, check=False, timeout=30
        )
    except OSError:  # no git at all: the content hash names the revision
        return None
    return out.stdout if out.returncode == 0 else None


def revision_of(policy_dir: Path) -> str:
    """The git commit of the policy (`-dirty-<hash12>` when bundled files changed), else `sha256:<hash>`."""
    digest = content_hash(policy_dir)
    commit = (_git(policy_dir, "log", "-1", "--format=%H", "--", ".") or "").strip()
    if not commit:
        return f"sha256:{digest}"
    status = _git(policy_dir, "status", "--porcelain", "--untracked-files=all", "--", ".") or ""
    changed = [line[3:] for line in status.splitlines() if len(line) > 3]
    if any(not name.strip('"').endswith(_TEST_SUFFIX) for name in changed):
        return f"{commit}-dirty-{digest[:12]}"
    return commit


def _run(argv: list[str], cwd: Path, what: str) -> str:
    try:
        out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=_TIMEOUT_S)
    except OSError as exc:
        raise PolicyBundleUsageError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    if out.returncode != 0:
        lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        raise PolicyBuildError(f"{what} failed (exit {out.returncode}): {' | '.join(lines[-6:])[:600]}")
    return out.stdout


def run_opa_tests(opa: Path, policy_dir: Path) -> None:
    """`opa test <policy folder>`; PolicyBuildError naming the failures when a test fails."""
    _run([str(opa), "test", str(policy_dir)], policy_dir, "opa test")


def build_bundle(
    opa: Path,
    policy_dir: Path,
    out: Path,
    key: BundleSigningKey,
    *,
    key_id: str = DEFAULT_KEY_ID,
    revision: str | None = None,
    run_tests: bool = True,
) -> BuiltBundle:
    """Test, then `opa build` the folder into a signed bundle at `out` (written whole, then renamed)."""
    if not policy_dir.is_dir():
        raise PolicyBundleUsageError(f"no policy folder at {policy_dir}")
    revision = revision or revision_of(policy_dir)
    if not REVISION_RE.match(revision):
        raise PolicyBundleUsageError(f"revision {revision!r} is not [A-Za-z0-9._:+-], 1-128 characters")
    if run_tests:
        run_opa_tests(opa, policy_dir)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _run(
            [
                str(opa),
                "build",
                "--bundle",
                ".",
                "--ignore",
                f"*{_TEST_SUFFIX}",
                "--signing-key",
                str(key.path.resolve()),
                "--signing-alg",
                key.algorithm,
                "--verification-key-id",  # opa build puts it in the signature's `kid` and `keyid`
                key_id,
                "--revision",
                revision,
                "--output",
                str(tmp),
            ],
            policy_dir,  # `-b .` from inside the folder: file names in the bundle are relative
            "opa build",
        )
        info = read_bundle(tmp)
        if info.revision != revision or not info.signed:
            raise PolicyBuildError(
                f"opa build wrote revision {info.revision!r}, signed={info.signed}: not the bundle asked for"
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return BuiltBundle(path=out, revision=revision, algorithm=key.algorithm, key_id=key_id)


def read_bundle(path: Path) -> BundleInfo:
    """The revision in the bundle's `.manifest` and whether it carries `.signatures.json`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PolicyBundleUsageError(f"cannot read the bundle {path}: {exc.strerror or exc}") from exc
    return read_bundle_bytes(data, str(path))


def read_bundle_bytes(data: bytes, name: str = "the bundle") -> BundleInfo:
    """`read_bundle` of bytes (a bundle fetched from a store); `name` says which in errors."""
    path = name
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = {m.name.lstrip("/"): m for m in tar.getmembers() if m.isfile()}
            manifest_member = members.get(".manifest")
            manifest: object = {}
            if manifest_member is not None:
                extracted = tar.extractfile(manifest_member)
                manifest = json.load(io.BytesIO(extracted.read())) if extracted is not None else {}
    except (OSError, tarfile.TarError, EOFError, json.JSONDecodeError) as exc:
        raise PolicyBundleUsageError(f"{path} is not an OPA bundle (.tar.gz with a .manifest): {exc}") from exc
    revision = manifest.get("revision") if isinstance(manifest, dict) else None
    if not isinstance(revision, str) or not REVISION_RE.match(revision):
        raise PolicyBundleUsageError(f"{path}: the bundle's .manifest has no usable revision ({revision!r})")
    return BundleInfo(revision=revision, signed=".signatures.json" in members, files=tuple(sorted(members)))


def verify_bundle(opa: Path, path: Path, public_pem: str, algorithm: str, key_id: str = DEFAULT_KEY_ID) -> BundleInfo:
    """Check the bundle's signature as OPA will (`opa build --verification-key`); PolicyBuildError if it fails."""
    info = read_bundle(path)
    if not info.signed:
        raise PolicyBuildError(f"{path} is not signed (no .signatures.json): OPA would refuse it")
    with tempfile.TemporaryDirectory(prefix="atb-policy-verify-") as tmp_dir:
        pub = Path(tmp_dir) / "public.pem"
        pub.write_text(public_pem)
        _run(
            [
                str(opa),
                "build",
                "--bundle",
                str(path.resolve()),
                "--verification-key",
                str(pub),
                "--verification-key-id",
                key_id,
                "--signing-alg",
                algorithm,
                "--output",
                str(Path(tmp_dir) / "verified.tar.gz"),
            ],
            Path(tmp_dir),
            f"signature check of {path.name}",
        )
    return info
