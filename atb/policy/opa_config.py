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

from pydantic import JsonValue

from atb.policy.keys import DEFAULT_KEY_ID
from atb.policy.publish import SERVED_NAME

__all__ = ["BUNDLE_NAME", "BUNDLE_SERVICE", "opa_config"]

BUNDLE_NAME = "atb"
"""The bundle's name in OPA: `data.system.bundles.atb`, the `name` label of OPA's bundle metrics."""

BUNDLE_SERVICE = "atb-bundles"


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
    return config
