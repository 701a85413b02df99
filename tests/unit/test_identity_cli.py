"""atb.cli.pki: `atb pki init|issue` against a temporary state folder (no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atb.cli.pki import pki_app
from atb_identity import SpiffeId, TrustBundle, bundle_path, ca_paths, load_svid, svid_paths, validate_svid

AGENT = "spiffe://atb.local/agent/crm-bot"


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def run(state: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(pki_app, list(args), env={"ATB_STATE_DIR": str(state)})
    return result.exit_code, result.stdout, result.stderr


def test_init_creates_then_keeps_the_ca(state: Path) -> None:
    code, out, _ = run(state, "init")
    assert code == 0
    assert "created" in out
    assert str(bundle_path(state)) in out
    assert str(ca_paths(state)[1]) in out
    first = ca_paths(state)[0].read_bytes()
    code, out, _ = run(state, "init")
    assert code == 0
    assert "kept" in out
    assert ca_paths(state)[0].read_bytes() == first


def test_init_takes_a_trust_domain(state: Path) -> None:
    code, out, _ = run(state, "init", "--trust-domain", "example.org", "--days", "30")
    assert code == 0, out
    assert TrustBundle.load(bundle_path(state), "example.org").roots


def test_issue_writes_an_svid_and_prints_where(state: Path) -> None:
    code, out, err = run(state, "issue", AGENT, "--hours", "2")
    assert code == 0, err
    chain_path, key_path = svid_paths(state, AGENT)
    assert str(chain_path) in out
    assert str(key_path) in out
    svid = load_svid(chain_path, key_path)
    assert svid.thumbprint() in out
    bundle = TrustBundle.load(bundle_path(state), "atb.local")
    assert validate_svid(svid.chain, bundle, at=datetime.now(UTC)) == SpiffeId.parse(AGENT)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("issue", "spiffe://evil.example/agent/x"), "foreign_trust_domain: "),
        (("issue", "https://atb.local/agent/x"), "not_spiffe_scheme: "),
        (("issue", "spiffe://atb.local/agent/../x"), "dot_segment: "),
        (("issue", "spiffe://atb.local"), "empty_path: "),
        (("issue", AGENT, "--hours", "0"), "hours must be positive"),
        (("init", "--trust-domain", "ATB.local"), "trust_domain_chars: "),
    ],
)
def test_bad_input_is_one_line_and_exit_2(state: Path, args: tuple[str, ...], message: str) -> None:
    code, out, err = run(state, *args)
    assert code == 2
    assert err.startswith("atb pki: error: ")
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in out + err


def test_a_ca_of_another_trust_domain_is_exit_2(state: Path) -> None:
    assert run(state, "init")[0] == 0
    code, _, err = run(state, "init", "--trust-domain", "example.org")
    assert code == 2
    assert "pki_state: " in err


def test_no_arguments_shows_help(state: Path) -> None:
    code, out, _ = run(state)
    assert code == 2  # click >= 8.2: no_args_is_help is a usage error
    assert "init" in out
    assert "issue" in out


def test_init_and_issue_take_spires_key_types(state: Path) -> None:
    code, out, err = run(state, "init", "--key-type", "ec-p256")
    assert code == 0, err
    code, out, err = run(state, "issue", AGENT)
    assert code == 0, err
    assert "proof alg    ES256" in out
    code, out, err = run(state, "issue", AGENT, "--key-type", "rsa-2048")
    assert code == 0, err
    assert "proof alg    RS256" in out
    assert load_svid(*svid_paths(state, AGENT)).alg == "RS256"
    code, _, err = run(state, "issue", AGENT, "--key-type", "dsa-1024")
    assert code == 2
    assert "is not one of ed25519, ec-p256" in err
