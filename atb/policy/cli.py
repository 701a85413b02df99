"""`atb policy`: build, sign, publish, serve, roll back and watch the policy bundle (docs/policy.md).

    atb policy build [--signing-key PEM] [--out FILE]   opa test, then a signed `opa build`
    atb policy key [--out FILE]                         the public key OPA verifies with
    atb policy publish BUNDLE --to DIR|URL              store revisions/<rev>.tar.gz, serve it
    atb policy rollback REVISION --to DIR|URL           serve an earlier signed bundle again
    atb policy revisions --dir DIR                      what the store holds, and what it serves
    atb policy serve --dir DIR --port P                 a development bundle server (ETag)
    atb policy status --opa URL [...]                   the revision each OPA serves; stale or not
    atb policy opa-config --url URL [--out FILE]        OPA's configuration: poll and verify
    atb policy coverage [--threshold 90]                the CI gate: the policy's line coverage
    atb policy decision-log-receiver [--port 8383]      OPA's decision logs into atb.audit

OPA is the pinned one (`<cache>/bin/opa`, atb/dev/toolchain.py), built on first use.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import typer
from aiohttp import web
from rich.console import Console
from rich.table import Table

from atb.dev.config import HOST, DevConfig
from atb.dev.toolchain import build_opa, opa_fresh
from atb.policy.bundle import build_bundle, revision_of, verify_bundle
from atb.policy.coverage import policy_coverage
from atb.policy.errors import PolicyBundleUsageError, PolicyEndpointError
from atb.policy.keys import DEFAULT_KEY_ID, SIGNING_KEY_ENV, resolve_signing_key
from atb.policy.opa_config import DecisionLogUpload, opa_config
from atb.policy.publish import (
    SERVED_NAME,
    http_publish,
    http_rollback,
    publish_to_dir,
    published_revisions,
    rollback_dir,
    s3_publish,
    s3_rollback,
    served_revision,
)
from atb.policy.server import bundle_server_app
from atb.policy.status import opa_bundle_reports

__all__ = ["policy_app"]

policy_app = typer.Typer(no_args_is_help=True, help="Signed policy bundles: build, publish, serve, roll back, status.")

SIGNING_KEY = typer.Option(
    None, "--signing-key", help=f"PEM private key (EC P-256 or RSA). Default: ${SIGNING_KEY_ENV}, else the dev key."
)
KEY_ID = typer.Option(DEFAULT_KEY_ID, "--key-id", help="Key id OPA's configuration names (signing.keyid).")
TOKEN_FILE = typer.Option(None, "--token-file", help="File holding the bearer token for an HTTP bundle store.")
BUNDLE_OUT = typer.Option(None, "--out", help="Bundle file. Default: <state>/policy/build/<revision>.tar.gz.")
POLICY_DIR = typer.Option(None, "--policy-dir", help="Policy folder. Default: opa/policy.")
REVISION = typer.Option(None, "--revision", help="Override the revision (default: the git commit).")
SKIP_TESTS = typer.Option(False, "--skip-tests", help="Do not run `opa test` first.")
PUBLIC_OUT = typer.Option(None, "--out", help="Write the public key (PEM) to this file.")
BUNDLE_ARG = typer.Argument(..., help="A bundle built by `atb policy build`.")
STORE = typer.Option(..., "--to", help="Bundle store: a folder, an http(s) URL that takes PUT, or s3://bucket/prefix.")
VERIFICATION_KEY = typer.Option(
    None, "--verification-key", help="Public key (PEM) to verify with. Default: the signing key's public half."
)
REVISION_ARG = typer.Argument(..., help="A revision published earlier to the same store.")
STORE_DIR = typer.Option(..., "--dir", help="Bundle store folder.")
PORT = typer.Option(8282, "--port", min=1, max=65535)
BIND = typer.Option(HOST, "--host")
UPLOAD_TOKEN = typer.Option(None, "--upload-token-file", help="Accept PUT uploads carrying this bearer token.")
OPA_URLS = typer.Option(..., "--opa", help="OPA base URL; repeat for every instance.")
EXPECT = typer.Option(None, "--expect", help="The revision every instance should serve.")
EXPECT_DIR = typer.Option(None, "--dir", help="Expect the revision this bundle store serves.")
JSON_OUT = typer.Option(False, "--json", help="Print JSON instead of a table.")
STORE_URL = typer.Option(..., "--url", help="Base URL of the bundle store OPA polls.")
MIN_DELAY = typer.Option(10, "--min-delay", min=1, help="Minimum seconds between polls.")
MAX_DELAY = typer.Option(30, "--max-delay", min=1, help="Maximum seconds between polls.")
PERSIST_DIR = typer.Option(
    None, "--persist-dir", help="Where OPA keeps the last verified bundle (writable; default: OPA's ./.opa)."
)
CONFIG_OUT = typer.Option(None, "--out", help="Write the configuration to this file.")
RESOURCE = typer.Option(SERVED_NAME, "--resource", help="Path of the served bundle under --url (<prefix>bundles/...).")
S3_SIGNING = typer.Option(False, "--s3-signing", help="The store is an S3 bucket: OPA signs its requests (AWS env).")
DL_URL = typer.Option(
    None, "--decision-log-url", help="Upload every decision to this receiver (atb policy decision-log-receiver)."
)
DL_TOKEN_PATH = typer.Option(
    None, "--decision-log-token-path", help="File (as OPA sees it) holding the receiver's bearer token."
)
DL_BUFFER = typer.Option(
    64 * 1024 * 1024, "--decision-log-buffer-bytes", min=32 * 1024, help="OPA's in-memory decision-log buffer."
)
DL_MAX_DELAY = typer.Option(10, "--decision-log-max-delay", min=1, help="Longest wait between two uploads (s).")


def _opa(config: DevConfig) -> Path:
    if opa_fresh(config):
        return config.bin_dir / "opa"
    err = Console(stderr=True)
    return asyncio.run(build_opa(config, lambda msg: err.print(msg)))


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def _token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise PolicyBundleUsageError(f"cannot read the token file {path}: {exc.strerror or exc}") from exc
    if not token:
        raise PolicyBundleUsageError(f"the token file {path} is empty")
    return token


def _public_key(verification_key: Path | None, signing_key: Path | None, config: DevConfig) -> tuple[str, str]:
    """(public PEM, algorithm): from `--verification-key`, else from the signing key."""
    if verification_key is not None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        try:
            pem = verification_key.read_text()
            key = serialization.load_pem_public_key(pem.encode())
        except (OSError, ValueError) as exc:
            raise PolicyBundleUsageError(f"{verification_key} is not a readable PEM public key: {exc}") from exc
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            return pem, "ES256"
        if isinstance(key, rsa.RSAPublicKey):
            return pem, "RS256"
        raise PolicyBundleUsageError(f"{verification_key}: only EC P-256 (ES256) and RSA (RS256) keys are used")
    key_info = resolve_signing_key(signing_key, config)
    return key_info.public_pem, key_info.algorithm


@policy_app.command()
def build(
    signing_key: Path | None = SIGNING_KEY,
    out: Path | None = BUNDLE_OUT,
    policy_dir: Path | None = POLICY_DIR,
    revision: str | None = REVISION,
    key_id: str = KEY_ID,
    skip_tests: bool = SKIP_TESTS,
) -> None:
    """Run `opa test`, then build and sign the policy bundle with the pinned OPA."""
    config = DevConfig.from_env()
    key = resolve_signing_key(signing_key, config)
    folder = (policy_dir or config.policy_dir).resolve()
    opa = _opa(config)
    target = out
    if target is None:
        rev = revision or revision_of(folder)
        revision = rev
        target = config.state_dir / "policy" / "build" / f"{rev.replace(':', '-')}.tar.gz"
    built = build_bundle(opa, folder, target, key, key_id=key_id, revision=revision, run_tests=not skip_tests)
    Console().print(f"built {built.path}\nrevision {built.revision}\nsigned {built.algorithm} key id {built.key_id}")


@policy_app.command()
def key(
    signing_key: Path | None = SIGNING_KEY,
    out: Path | None = PUBLIC_OUT,
    key_id: str = KEY_ID,
) -> None:
    """Print the public key bundles are verified with (the dev key is generated on first use)."""
    info = resolve_signing_key(signing_key, DevConfig.from_env())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(info.public_pem)
    typer.echo(f"# key id {key_id}, algorithm {info.algorithm}, private key {info.path}", err=True)
    typer.echo(info.public_pem, nl=False)


@policy_app.command()
def publish(
    bundle: Path = BUNDLE_ARG,
    to: str = STORE,
    verification_key: Path | None = VERIFICATION_KEY,
    signing_key: Path | None = SIGNING_KEY,
    key_id: str = KEY_ID,
    token_file: Path | None = TOKEN_FILE,
) -> None:
    """Check the bundle's signature, store it under revisions/ and serve it as bundles/atb.tar.gz."""
    config = DevConfig.from_env()
    public_pem, algorithm = _public_key(verification_key, signing_key, config)
    info = verify_bundle(_opa(config), bundle, public_pem, algorithm, key_id)
    if _is_url(to):
        asyncio.run(http_publish(bundle, to, _token(token_file)))
    elif to.startswith("s3://"):
        s3_publish(bundle, to)
    else:
        publish_to_dir(bundle, Path(to))
    Console().print(f"published revision {info.revision} to {to}")


@policy_app.command()
def rollback(
    revision: str = REVISION_ARG,
    to: str = STORE,
    token_file: Path | None = TOKEN_FILE,
) -> None:
    """Serve an earlier signed bundle again, unchanged (OPA picks it up on its next poll)."""
    if _is_url(to):
        asyncio.run(http_rollback(to, revision, _token(token_file)))
    elif to.startswith("s3://"):
        s3_rollback(to, revision)
    else:
        rollback_dir(Path(to), revision)
    Console().print(f"serving revision {revision} from {to}")


@policy_app.command()
def revisions(directory: Path = STORE_DIR) -> None:
    """List the published revisions, oldest first; `*` marks the one being served."""
    for item in published_revisions(directory):
        typer.echo(f"{'*' if item.served else ' '} {item.revision}")


@policy_app.command()
def serve(
    directory: Path = STORE_DIR,
    port: int = PORT,
    host: str = BIND,
    upload_token_file: Path | None = UPLOAD_TOKEN,
) -> None:
    """Serve a bundle store folder over HTTP for development (ETag, 304 when unchanged)."""
    if directory.exists() and not directory.is_dir():
        raise PolicyBundleUsageError(f"--dir {directory} is a file, not a bundle store folder")
    directory.mkdir(parents=True, exist_ok=True)
    app = bundle_server_app(directory.resolve(), _token(upload_token_file))
    Console().print(f"serving {directory} on http://{host}:{port}/ (Ctrl-C stops)")
    web.run_app(app, host=host, port=port, print=None)


@policy_app.command()
def status(
    opa: list[str] = OPA_URLS,
    expect: str | None = EXPECT,
    directory: Path | None = EXPECT_DIR,
    json_out: bool = JSON_OUT,
) -> None:
    """The bundle revision each OPA instance serves, and whether it is stale (exit 1 stale, 4 unreachable)."""
    if expect is None and directory is not None:
        expect = served_revision(directory)
    reports = asyncio.run(opa_bundle_reports(opa))
    rows = [
        {
            "opa": r.opa,
            "bundle": r.bundle,
            "revision": r.revision,
            "activated_at": r.activated_at,
            "stale": r.stale(expect),
            "error": r.error,
        }
        for r in reports
    ]
    if json_out:
        typer.echo(json.dumps({"expected": expect, "instances": rows}, indent=2))
    else:
        table = Table(title=f"expected revision: {expect or '(not given)'}")
        for column in ("opa", "bundle", "revision", "activated at", "stale", "last error"):
            table.add_column(column)
        for row in rows:
            stale = row["stale"]
            table.add_row(
                str(row["opa"]),
                str(row["bundle"] or "-"),
                str(row["revision"] or "-"),
                str(row["activated_at"] or "-"),
                "?" if stale is None else ("yes" if stale else "no"),
                str(row["error"] or ""),
            )
        Console(width=max(Console().width, 160)).print(table)
    if any(not r.reachable for r in reports):
        raise PolicyEndpointError(
            "an OPA instance did not answer (see the table): check its URL, or start the local one with `atb dev up`"
        )
    if any(r.stale(expect) for r in reports):
        raise typer.Exit(1)


@policy_app.command("opa-config")
def opa_config_command(
    url: str = STORE_URL,
    verification_key: Path | None = VERIFICATION_KEY,
    signing_key: Path | None = SIGNING_KEY,
    key_id: str = KEY_ID,
    min_delay: int = MIN_DELAY,
    max_delay: int = MAX_DELAY,
    persist_dir: str | None = PERSIST_DIR,
    out: Path | None = CONFIG_OUT,
    resource: str = RESOURCE,
    s3_signing: bool = S3_SIGNING,
    decision_log_url: str | None = DL_URL,
    decision_log_token_path: str | None = DL_TOKEN_PATH,
    decision_log_buffer_bytes: int = DL_BUFFER,
    decision_log_max_delay: int = DL_MAX_DELAY,
) -> None:
    """Write OPA's configuration: poll the bundle store and verify every bundle's signature; upload decisions."""
    if min_delay > max_delay:
        raise PolicyBundleUsageError(f"--min-delay {min_delay} is above --max-delay {max_delay}")
    public_pem, algorithm = _public_key(verification_key, signing_key, DevConfig.from_env())
    document = opa_config(
        service_url=url,
        public_pem=public_pem,
        algorithm=algorithm,
        key_id=key_id,
        min_delay_s=min_delay,
        max_delay_s=max_delay,
        persistence_dir=persist_dir,
        resource=resource,
        s3_signing=s3_signing,
        decision_logs=None
        if decision_log_url is None
        else DecisionLogUpload(
            url=decision_log_url,
            buffer_bytes=decision_log_buffer_bytes,
            max_delay_s=decision_log_max_delay,
            token_path=decision_log_token_path,
        ),
    )
    text = json.dumps(document, indent=2) + "\n"
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
        Console(stderr=True).print(f"wrote {out}")


THRESHOLD = typer.Option(90.0, "--threshold", min=0.0, max=100.0, help="Least share of the policy's lines covered (%).")


@policy_app.command()
def coverage(policy_dir: Path | None = POLICY_DIR, threshold: float = THRESHOLD) -> None:
    """Run the policy's tests with coverage; exit 1 when under the threshold (the policy files, not the tests)."""
    config = DevConfig.from_env()
    report = policy_coverage(_opa(config), (policy_dir or config.policy_dir).resolve())
    for item in report.files:
        gaps = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in item.not_covered)
        total = item.covered_lines + item.not_covered_lines
        typer.echo(f"{item.path}: {item.covered_lines}/{total} lines" + (f"; not covered: rows {gaps}" if gaps else ""))
    verdict = "ok" if report.percent >= threshold else "FAILED"
    typer.echo(f"policy coverage {report.percent:.2f}% (threshold {threshold:g}%): {verdict}")
    if report.percent < threshold:
        raise typer.Exit(1)


RECEIVER_PORT = typer.Option(8383, "--port", min=0, max=65535)
RECEIVER_TOKEN = typer.Option(None, "--token-file", help="Accept only uploads carrying this bearer token.")
SVID_CERT = typer.Option(None, "--svid-cert", help="The receiver's SVID chain (PEM); default: one from the dev CA.")
SVID_KEY = typer.Option(None, "--svid-key", help="The SVID's private key (PEM).")


@policy_app.command("decision-log-receiver")
def decision_log_receiver(
    port: int = RECEIVER_PORT,
    host: str = BIND,
    token_file: Path | None = RECEIVER_TOKEN,
    svid_cert: Path | None = SVID_CERT,
    svid_key: Path | None = SVID_KEY,
) -> None:
    """Receive OPA's decision logs and write each decision, with its revision, to atb.audit (signed)."""
    from atb.policy.decision_logs import RECEIVER_ID, serve_receiver
    from atb_runtime.identity import service_svid
    from atb_runtime.settings import CommonSettings

    if (svid_cert is None) != (svid_key is None):
        raise PolicyBundleUsageError("--svid-cert and --svid-key go together")
    settings = CommonSettings()
    svid = service_svid(settings.state_dir, RECEIVER_ID, svid_cert, svid_key)
    Console().print(  # stdout: stderr carries only the one line of an error
        f"decision-log receiver on http://{host}:{port}/logs → {settings.kafka_bootstrap_servers} as {svid.spiffe_id}"
    )
    asyncio.run(
        serve_receiver(
            settings.kafka_bootstrap_servers,
            svid,
            host=host,
            port=port,
            namespace=settings.topic_namespace,
            token=_token(token_file),
        )
    )
