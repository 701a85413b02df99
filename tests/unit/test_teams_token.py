"""The Bot Framework token rules (chat.adapters.teams_auth) against the local stand-in's metadata and keys.

The stand-in serves the OpenID metadata and a JWKS on 127.0.0.1 (one key endorsed
for msteams, one only for webchat); every forgery of tests/teams_forgeries.py must
raise `TokenError` with the code of the rule it breaks, and a genuine token, one
59 s past its expiry (inside the leeway) included, must pass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from atb.dev.teams_standin import TeamsStandIn, invoke_activity
from chat.adapters.teams_auth import TokenValidator
from chat.errors import TokenError
from tests.teams_forgeries import teams_forgeries

ALICE = "a11ce000-0000-4000-8000-000000000001"


@pytest.fixture(scope="module")
async def standin() -> AsyncIterator[TeamsStandIn]:
    teams = TeamsStandIn()
    await teams.start()
    try:
        yield teams
    finally:
        await teams.stop()


def _validator(standin: TeamsStandIn) -> TokenValidator:
    return TokenValidator(standin.app_id, standin.metadata_url, leeway_seconds=60)


def _activity(standin: TeamsStandIn) -> dict[str, object]:
    return invoke_activity(aad_object_id=ALICE, request_id="req-1", verb="atb_approve", service_url=standin.service_url)


async def test_a_genuine_token_passes_and_names_its_service_url(standin: TeamsStandIn) -> None:
    claims = await _validator(standin).validate({"Authorization": f"Bearer {standin.sign_token()}"}, _activity(standin))
    assert (claims.service_url, claims.audience) == (standin.service_url, standin.app_id)


async def test_expiry_has_a_small_leeway(standin: TeamsStandIn) -> None:
    validator = _validator(standin)
    late = standin.sign_token(expires_in=-50)  # expired 50 s ago: inside the 60 s leeway
    claims = await validator.validate({"Authorization": f"Bearer {late}"}, _activity(standin))
    assert claims.service_url == standin.service_url
    with pytest.raises(TokenError) as refused:
        await validator.validate({"Authorization": f"Bearer {standin.sign_token(expires_in=-61)}"}, _activity(standin))
    assert refused.value.code == "expired"


async def test_every_forgery_is_refused_by_the_rule_it_breaks(standin: TeamsStandIn) -> None:
    validator = _validator(standin)
    corpus = teams_forgeries(standin, "req-1", ALICE)
    assert len(corpus) >= 150
    assert len({f.name for f in corpus}) == len(corpus)
    got: dict[str, str] = {}
    for forgery in corpus:
        headers = {}
        if forgery.authorization is not None:
            headers["Authorization"] = forgery.authorization
        elif forgery.token is not None:
            headers["Authorization"] = f"Bearer {forgery.token}"
        try:
            await validator.validate(headers, forgery.activity)
        except TokenError as exc:
            got[forgery.name] = exc.code
        else:
            got[forgery.name] = "accepted"
    assert got == {f.name: f.code for f in corpus}


async def test_metadata_with_another_issuer_or_unreachable_refuses_everything(standin: TeamsStandIn) -> None:
    wrong = TokenValidator(standin.app_id, standin.metadata_url, issuer="https://example.invalid")
    with pytest.raises(TokenError) as refused:
        await wrong.validate({"Authorization": f"Bearer {standin.sign_token()}"}, _activity(standin))
    assert refused.value.code == "metadata_unavailable"
    gone = TokenValidator(standin.app_id, f"{standin.base_url}/nothing-here")
    with pytest.raises(TokenError) as refused:
        await gone.validate({"Authorization": f"Bearer {standin.sign_token()}"}, _activity(standin))
    assert refused.value.code == "metadata_unavailable"
