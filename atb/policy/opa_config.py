"""The OPA configuration that polls the signed bundle and verifies it (`atb policy opa-config`).

The same document serves the dev stack's bundle mode (atb/dev/opa.py), a
docker-compose OPA (`opa run --server --config-file /config/opa.json`) and a
Kubernetes sidecar (the file from a ConfigMap); docs/policy.md shows each.

    services.atb-bundles.url         the bundle store (atb/policy/publish.py); for a bucket, with
                                     `credentials.s3_signing` (AWS settings from OPA's environment)
    bundles.atb.resource             bundles/atb.tar.gz
    bundles.atb.polling              min/max delay between polls (OPA's long-polling off)
    bundles.atb.signing.keyid        the key every bundle must be signed with: a bundle
                                     without `.signatures.json`, or whose signature does
                                     not verify with that key, is refused and the last
                                     good bundle stays active
    keys.<keyid>                     the public key (PEM) and its algorithm
    bundles.atb.persist              keep the last verified bundle on disk (see below)
    status.prometheus                OPA's bundle metrics on /metrics and /v1/status
                                     (deploy/prometheus/alerts.yml alerts on them)
    decision_logs (optional)         upload every decision to the ATB receiver (`services.atb-decision-logs`,
                                     atb/policy/decision_logs.py), buffered in memory up to a limit

`signing.keyid` is always written: OPA before 1.21.3 required the signature only
when a key id was configured (GHSA-g2pf-6v5v-qcc8).

`bundles.atb.persist` is always on, for two reasons. A restarted OPA starts from
the last bundle it verified when the store is down. And OPA before 1.21.3
checked no signature at all on a *delta* bundle (a `patch.json` instead of
policy files): with persistence on, OPA refuses every delta bundle ("persisting
delta bundle to disk is not supported"), so an unsigned patch to the policy's
data cannot be slipped in (tests/integration/test_policy_bundles.py proves
both). OPA writes the bundle under `persistence_directory` (default: `.opa` in
its working directory), which must be writable.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import JsonValue

from atb.policy.keys import DEFAULT_KEY_ID
from atb.policy.publish import SERVED_NAME

__all__ = ["BUNDLE_NAME", "BUNDLE_SERVICE", "DECISION_LOG_SERVICE", "DecisionLogUpload", "opa_config"]

BUNDLE_NAME = "atb"
"""The bundle's name in OPA: `data.system.bundles.atb`, the `name` label of OPA's bundle metrics."""

BUNDLE_SERVICE = "atb-bundles"
DECISION_LOG_SERVICE = "atb-decision-logs"


@dataclass(frozen=True)
class DecisionLogUpload:
    """Where OPA's decision-log plugin uploads (atb/policy/decision_logs.py) and how much it buffers.

    OPA keeps what it could not upload in memory, in gzip chunks of at most 32 KiB
    (`upload_size_limit_bytes`), up to `buffer_size_limit_bytes`; when that is full
    it drops the OLDEST chunks to make room, and counts each drop in
    `decision_logs_dropped_buffer_size_limit_bytes_exceeded_total`. Decisions are
    never delayed or refused for it.
    """

    url: str
    buffer_bytes: int = 64 * 1024 * 1024
    min_delay_s: int = 1
    max_delay_s: int = 10
    token_path: str | None = None
    """A file holding the receiver's bearer token (OPA reads it on every upload)."""


def opa_config(
    *,
    service_url: str,
    public_pem: str,
    algorithm: str,
    key_id: str = DEFAULT_KEY_ID,
    resource: str = SERVED_NAME,
    min_delay_s: int = 10,
    max_delay_s: int = 30,
    persistence_dir: str | None = None,
    s3_signing: bool = False,
    decision_logs: DecisionLogUpload | None = None,
) -> dict[str, JsonValue]:
    """OPA's configuration document (JSON, which OPA reads as YAML too)."""
    if not 0 < min_delay_s <= max_delay_s:
        raise ValueError(f"polling delays must satisfy 0 < min ({min_delay_s}) <= max ({max_delay_s})")
    bundle: dict[str, JsonValue] = {
        "service": BUNDLE_SERVICE,
        "resource": resource,
        "polling": {"min_delay_seconds": min_delay_s, "max_delay_seconds": max_delay_s},
        "signing": {"keyid": key_id},
        "persist": True,  # also made OPA before 1.21.3 refuse delta bundles, which it would not verify
    }
    service: dict[str, JsonValue] = {"url": service_url.rstrip("/")}
    if s3_signing:
        # An S3 bucket as the store: OPA signs its GETs (SigV4) with AWS_ACCESS_KEY_ID,
        # AWS_SECRET_ACCESS_KEY and AWS_REGION from its environment.
        service["credentials"] = {"s3_signing": {"environment_credentials": {}}}
    config: dict[str, JsonValue] = {
        "services": {BUNDLE_SERVICE: service},
        "bundles": {BUNDLE_NAME: bundle},
        "keys": {key_id: {"algorithm": algorithm, "key": public_pem}},
        "status": {"prometheus": True},
    }
    if persistence_dir is not None:
        config["persistence_directory"] = persistence_dir
    if decision_logs is not None:
        dl = decision_logs
        if not 0 < dl.min_delay_s <= dl.max_delay_s:
            raise ValueError(f"upload delays must satisfy 0 < min ({dl.min_delay_s}) <= max ({dl.max_delay_s})")
        if dl.buffer_bytes < 32 * 1024:
            raise ValueError(f"the decision-log buffer must hold one 32 KiB chunk, not {dl.buffer_bytes} bytes")
        receiver: dict[str, JsonValue] = {"url": dl.url.rstrip("/")}
        if dl.token_path is not None:
            receiver["credentials"] = {"bearer": {"token_path": dl.token_path}}
        services = config["services"]
        assert isinstance(services, dict)
        services[DECISION_LOG_SERVICE] = receiver
        config["decision_logs"] = {
            "service": DECISION_LOG_SERVICE,
            "reporting": {
                "buffer_type": "size",
                "buffer_size_limit_bytes": dl.buffer_bytes,
                "upload_size_limit_bytes": 32 * 1024,
                "min_delay_seconds": dl.min_delay_s,
                "max_delay_seconds": dl.max_delay_s,
            },
        }
    return config
