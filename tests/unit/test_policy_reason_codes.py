"""Every reason code the policy (opa/policy/*.rego) can give is a `ReasonCode`, and replay knows them all.

The policy writes each deny reason as `reason("<code>", <detail>)` with the code a
string literal (opa/policy/poa.rego). This test reads every such call from the
policy files (the `*_test.rego` files are tests, not policy) and checks that each
code is in the one enum of contracts/reasons.py, that no call builds its code
some other way, that nothing writes a `{"code": ...}` object outside `reason()`,
and that `atb replay policy` treats exactly these codes as the policy's denies.
"""

from __future__ import annotations

import re
from pathlib import Path

from atb.replay.whatif import POLICY_DENY_CODES
from contracts.reasons import ReasonCode

POLICY = Path(__file__).resolve().parents[2] / "opa" / "policy"
CALL = re.compile(r"\breason\(")
LITERAL_CALL = re.compile(r'\breason\(\s*"([^"\\]*)"\s*,')
DEFINITION = re.compile(r"^reason\(code, detail\) :=", re.MULTILINE)


def _policy_sources() -> dict[str, str]:
    files = sorted(p for p in POLICY.glob("*.rego") if not p.name.endswith("_test.rego"))
    assert files, f"no policy files under {POLICY}"
    return {p.name: p.read_text(encoding="utf-8") for p in files}


def _code_literals() -> set[str]:
    codes: set[str] = set()
    for name, text in _policy_sources().items():
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        body = DEFINITION.sub("", body)
        calls = CALL.findall(body)
        literals = LITERAL_CALL.findall(body)
        assert len(calls) == len(literals), f"{name}: a reason() call without a literal code"
        # Objects with a code built outside reason() would escape this check.
        assert body.count('"code"') == 1, f"{name}: a {{'code': ...}} object outside reason()"
        codes.update(literals)
    return codes


def test_the_policy_gives_reasons_through_one_function() -> None:
    assert any(DEFINITION.search(text) for text in _policy_sources().values())


def test_every_code_the_policy_can_give_is_a_reason_code() -> None:
    codes = _code_literals()
    assert codes, "the policy gives deny reasons"
    unknown = codes - {c.value for c in ReasonCode}
    assert not unknown, f"codes the policy gives that contracts/reasons.py does not know: {sorted(unknown)}"


def test_replay_treats_exactly_the_policys_codes_as_policy_denies() -> None:
    assert {c.value for c in POLICY_DENY_CODES} == _code_literals()
