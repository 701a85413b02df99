"""Every `atb` command answers a dead stack or bad input with one line on stderr and a documented exit code.

The commands are enumerated from the Typer app, so a new command is covered at
once: it gets the malformed-argument checks automatically, and
`test_every_command_says_what_it_does_with_the_stack_down` fails until it has an
entry in STACK_DOWN. "The stack down" is Kafka and OPA on closed ports of
127.0.0.1, a fresh state folder and a missing audit database; nothing here needs
the real stack. Most runs are in-process (CliRunner); a few run the real `atb`
entry point. The exit codes are atb/errors.py's ExitCode (README, "Exit codes").
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from atb.cli import app
from atb.errors import ExitCode
from atb_identity import issue_svid

ATB = str(Path(sys.executable).parent / "atb")
DOCUMENTED = {int(code) for code in ExitCode} - {0}
SECONDS_PER_COMMAND = 20.0
"""Generous on a shared 2-core machine; with refused connections each command takes well under a second."""


def _closed_port() -> int:
    """A port nothing listens on (bound and released: connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def commands() -> list[tuple[str, ...]]:
    """Every runnable command of `atb`, as the words that name it (("audit", "verify"), ("trace",))."""
    found: list[tuple[str, ...]] = []

    def walk(group: TyperGroup, prefix: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            if isinstance(command, TyperGroup):
                walk(command, (*prefix, name))
            else:
                found.append((*prefix, name))

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    walk(root, ())
    return sorted(found)


# What each command is given with the stack down, and the exit code it must give.
# `{state}` is the temporary state folder, `{missing}` a database file that does not exist.
STACK_DOWN: dict[str, tuple[list[str], int]] = {
    "audit archive": (["s3://atb-archive/audit", "--db", "{missing}"], ExitCode.UNAVAILABLE),
    "audit export": (["--since", "2020-01-01", "--until", "2030-01-01", "--db", "{missing}"], ExitCode.UNAVAILABLE),
    "audit hold": (["req-x", "--reason", "case 1", "--db", "sqlite:///{state}/hold.db"], ExitCode.UNAVAILABLE),
    "audit prove": (["evt-1", "--db", "{missing}"], ExitCode.UNAVAILABLE),
    "audit purge": (["--yes", "--db", "sqlite:///{state}/purge.db"], ExitCode.UNAVAILABLE),
    "audit tail": (["--timeout", "5"], ExitCode.UNAVAILABLE),
    "audit verify": (["--db", "{missing}"], ExitCode.UNAVAILABLE),
    "console credentials list": ([], ExitCode.OK),  # its own store only: an empty table
    "console credentials revoke": (["alice"], ExitCode.USAGE),  # nobody enrolled yet
    "console enroll": (["alice", "--as", "carol"], ExitCode.UNAVAILABLE),  # the link's audit event needs Kafka
    "delegate grant": (["alice", "dave", "--until", "8h"], ExitCode.UNAVAILABLE),
    "delegate list": ([], ExitCode.UNAVAILABLE),
    "delegate revoke": (["dlg-x", "--as", "alice"], ExitCode.UNAVAILABLE),
    "delegate vote": (["req-x", "approve", "--for", "bob", "--as", "alice"], ExitCode.UNAVAILABLE),
    "demo": ([], ExitCode.USAGE),  # it would start the stack itself: a bad setting stops it first (env below)
    "dev down": ([], ExitCode.OK),  # nothing of this state folder runs
    "dev status": ([], ExitCode.OK),
    "dev tools": ([], ExitCode.USAGE),  # would build: a bad setting stops it first (env below)
    "dev up": ([], ExitCode.USAGE),  # would start Kafka: a bad setting stops it first (env below)
    "doctor": ([], ExitCode.FAILED),
    "keys rotate": ([], ExitCode.UNAVAILABLE),
    "pending": (["--as", "alice"], ExitCode.UNAVAILABLE),
    "pki init": ([], ExitCode.OK),
    "pki issue": (["spiffe://atb.local/agent/x", "--hours", "1"], ExitCode.OK),
    "policy build": (["--out", "{state}/bundle.tar.gz"], ExitCode.OK),  # needs the pinned OPA only
    "policy coverage": (["--policy-dir", "opa/policy"], ExitCode.OK),
    "policy decision-log-receiver": (["--port", "0"], ExitCode.UNAVAILABLE),
    "policy key": ([], ExitCode.OK),
    "policy opa-config": (["--url", "http://127.0.0.1:1/", "--out", "{state}/opa.yaml"], ExitCode.OK),
    "policy publish": (["{state}/no-bundle.tar.gz", "--to", "{state}/store"], ExitCode.USAGE),
    "policy revisions": (["--dir", "{state}/store"], ExitCode.OK),
    "policy rollback": (["rev-x", "--to", "{state}/store"], ExitCode.USAGE),
    "policy serve": (["--dir", "{state}/pki/bundle.pem"], ExitCode.USAGE),  # a file: refused before it serves
    "policy status": (["--opa", "http://127.0.0.1:1"], ExitCode.UNAVAILABLE),
    "poa revoke": (["jti-x"], ExitCode.UNAVAILABLE),
    "replay audit": ([], ExitCode.UNAVAILABLE),
    "replay policy": (["--policy", "opa/policy"], ExitCode.UNAVAILABLE),
    "replay redrive": ([], ExitCode.UNAVAILABLE),
    "trace": (["req-x"], ExitCode.UNAVAILABLE),
    "vote": (["req-x", "approve", "--as", "alice", "--timeout", "5"], ExitCode.UNAVAILABLE),
    "witness key": ([], ExitCode.OK),  # needs nothing but its state folder
    "witness serve": ([], ExitCode.USAGE),  # no log to cosign for: refused before it serves
}
BAD_SETTING = {"demo", "dev tools", "dev up"}
"""Commands that start or build things: run with ATB_KAFKA_PORT=not-a-port so they refuse before doing so."""


@pytest.fixture
def dead_stack(tmp_path: Path) -> dict[str, str]:
    """Environment of a machine whose Kafka and OPA do not answer, with alice's and carol's (an enrollment
    officer's) SVIDs in a fresh state folder."""
    state = tmp_path / "state"
    issue_svid(state, "spiffe://atb.local/user/alice", hours=1)
    issue_svid(state, "spiffe://atb.local/user/carol", hours=1)
    kafka, opa = f"127.0.0.1:{_closed_port()}", f"http://127.0.0.1:{_closed_port()}"
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "ATB_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "ATB_OPA_URL": opa,
        "ATB_STATE_DIR": str(state),
        "ATB_AUDIT_DB_URL": f"sqlite:///{tmp_path / 'missing' / 'audit.db'}",
        "ATB_TOPIC_NAMESPACE": "",
        "ATB_APPROVER": "",
        "ATB_DEBUG": "",
    }


def _invoke(args: list[str], env: dict[str, str]) -> tuple[Result, float]:
    started = time.monotonic()
    result = CliRunner().invoke(app, args, env=env)
    return result, time.monotonic() - started


def _assert_one_line(result: Result, path: str, code: int) -> None:
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    assert result.exit_code == code, (result.exit_code, everything)
    if code == ExitCode.OK:
        return
    assert result.exit_code in DOCUMENTED
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"stderr of `atb {path}` is {len(lines)} lines:\n{result.stderr}"
    # `atb dev` and `atb pki` also run on their own (`python -m atb.dev`) and name their group only.
    words = path.split()
    prefixes = [f"atb {' '.join(words[:n])}: error: " for n in range(len(words), 0, -1)]
    prefix = next((p for p in prefixes if lines[0].startswith(p)), None)
    assert prefix is not None, lines[0]
    assert len(lines[0]) > len(prefix) + 10  # says something


def test_every_command_says_what_it_does_with_the_stack_down() -> None:
    named = {" ".join(c) for c in commands()}
    assert named == set(STACK_DOWN), (
        f"commands without a STACK_DOWN entry: {sorted(named - set(STACK_DOWN))}; "
        f"entries of no command: {sorted(set(STACK_DOWN) - named)}"
    )


@pytest.mark.parametrize("path", sorted(STACK_DOWN))
def test_the_stack_down_is_one_line_and_a_documented_code(
    path: str, dead_stack: dict[str, str], tmp_path: Path
) -> None:
    extra, code = STACK_DOWN[path]
    fill = {"state": dead_stack["ATB_STATE_DIR"], "missing": f"sqlite:///{tmp_path / 'missing' / 'audit.db'}"}
    args = [*path.split(), *(a.format(**fill) for a in extra)]
    env = {**dead_stack, **({"ATB_KAFKA_PORT": "not-a-port"} if path in BAD_SETTING else {})}
    result, seconds = _invoke(args, env)
    _assert_one_line(result, path, code)
    assert seconds < SECONDS_PER_COMMAND, f"`atb {path}` took {seconds:.1f}s with the stack down"
    if code == ExitCode.UNAVAILABLE:  # names what is unreachable and what to do
        assert any(word in result.stderr for word in ("Kafka", "audit store", "OPA")), result.stderr
        assert "atb dev up" in result.stderr or "--db" in result.stderr, result.stderr


@pytest.mark.parametrize("command", commands(), ids=" ".join)
def test_an_unknown_option_is_one_line_and_exit_2(command: tuple[str, ...], dead_stack: dict[str, str]) -> None:
    result, _ = _invoke([*command, "--no-such-option"], dead_stack)
    _assert_one_line(result, " ".join(command), ExitCode.USAGE)
    assert "No such option: --no-such-option" in result.stderr


def _required_arguments(command: tuple[str, ...]) -> list[str]:
    root = typer.main.get_command(app)
    node = root
    for word in command:
        assert isinstance(node, TyperGroup)
        node = node.commands[word]
    return [p.name or "" for p in node.params if p.required and p.param_type_name == "argument"]


@pytest.mark.parametrize("command", [c for c in commands() if _required_arguments(c)], ids=" ".join)
def test_a_missing_argument_is_one_line_and_exit_2(command: tuple[str, ...], dead_stack: dict[str, str]) -> None:
    result, _ = _invoke(list(command), dead_stack)
    _assert_one_line(result, " ".join(command), ExitCode.USAGE)
    assert "Missing argument" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["vote", "req-x", "maybe", "--as", "alice"], "'maybe' is not one of 'approve', 'deny'"),
        (["vote", "req-x", "approve"], "say who votes: --as <name>"),
        (["vote", "req-x", "approve", "--as", "nobody"], "no SVID for spiffe://atb.local/user/nobody"),
        (["pending", "--as", "nobody"], "atb pki issue spiffe://atb.local/user/nobody"),
        (["pki", "issue", "https://atb.local/agent/x"], "not_spiffe_scheme"),
        (["pki", "issue", "spiffe://atb.local/agent/x", "--hours", "soon"], "'soon' is not a valid float"),
        (["audit", "export", "--since", "last week", "--until", "2030-01-01"], "'last week' is not an ISO 8601"),
        (["audit", "hold", "--reason", "x", "--db", "sqlite:///{state}/h.db"], "give a request id or a range"),
        (["audit", "purge"], "pass --yes"),
        (["audit", "verify", "--db", "nosuchdialect://x"], "bad database URL"),
        (["audit", "tail", "--max", "many"], "'many' is not a valid int"),
        (["replay", "redrive", "--since", "yesterday"], "not an ISO-8601 time"),
        (["trace", "req-x", "--seconds", "long"], "'long' is not a valid float"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_malformed_input_is_one_line_and_exit_2(args: list[str], message: str, dead_stack: dict[str, str]) -> None:
    args = [a.format(state=dead_stack["ATB_STATE_DIR"]) for a in args]
    result, _ = _invoke(args, dead_stack)
    assert result.exit_code == ExitCode.USAGE, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_debug_shows_the_traceback(dead_stack: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["--debug", "trace", "req-x"], env=dead_stack)
    assert result.exit_code != 0
    assert result.exception is not None
    assert type(result.exception).__name__ == "KafkaConnectionError"


# -- the real entry point --------------------------------------------------------------------------


def _atb(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ATB, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["trace", "req-x"], ExitCode.UNAVAILABLE),
        (["audit", "verify", "--db", "{missing}"], ExitCode.UNAVAILABLE),
        (["vote", "req-x", "maybe"], ExitCode.USAGE),
        (["doctor"], ExitCode.FAILED),
    ],
)
def test_the_installed_command_keeps_the_contract(
    args: list[str], code: int, dead_stack: dict[str, str], tmp_path: Path
) -> None:
    args = [a.format(missing=f"sqlite:///{tmp_path / 'missing.db'}") for a in args]
    proc = _atb(*args, env=dead_stack)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"atb {args[0]}")
    assert "Traceback" not in proc.stdout + proc.stderr


def test_the_installed_command_shows_a_traceback_with_debug(dead_stack: dict[str, str]) -> None:
    proc = _atb("--debug", "trace", "req-x", env=dead_stack)
    assert proc.returncode != 0
    assert "KafkaConnectionError" in proc.stderr
    assert len(proc.stderr.splitlines()) > 10


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["alice"], "say which enrollment officer grants this: --as <name>"),
        (["bob", "--as", "alice"], "spiffe://atb.local/user/alice may not grant enrollments: alice is in none of the"),
        (["bob", "--as", "carol", "--ttl", "7200"], "--ttl 7200: a link works between 1 s and 3600 s"),
    ],
)
def test_console_enroll_refuses_a_grant_no_verifier_would_accept_before_signing_it(
    dead_stack: dict[str, str], args: list[str], says: str
) -> None:
    """Refused as a usage error (exit 2), before Kafka is asked: no grant is signed, no link made."""
    result, _ = _invoke(["console", "enroll", *args], dead_stack)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert says in " ".join((result.stdout + result.stderr).split()), result.output
