"""Grants: who may do what, carried in signed LiveKit access tokens."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest
from livekit import api

from appliance.core.errors import AuthError
from appliance.rooms.tokens import CONSOLE, HUB, ROLES, Grant, TokenAuthority, audience_for

KEY, SECRET = "APIswitchboard", "s3cret-s3cret-s3cret-s3cret-s3cret"


@pytest.fixture
def tokens() -> TokenAuthority:
    return TokenAuthority(KEY, SECRET)


@pytest.mark.parametrize("role", ROLES)
def test_mint_and_verify_each_role(tokens: TokenAuthority, role: str):
    grant = tokens.verify(tokens.mint(f"{role}-1", role), audience_for(role))
    assert grant == Grant(identity=f"{role}-1", role=role, room=None)
    assert grant.allows(role)
    assert not grant.allows(*(r for r in ROLES if r != role))


def test_room_travels_in_the_grant(tokens: TokenAuthority):
    grant = tokens.verify(tokens.mint("worker-1", "sip", room="CAabc123"), HUB)
    assert grant.room == "CAabc123"


def test_livekit_grants_follow_the_role(tokens: TokenAuthority):
    # Our verify checked the signature and audience; livekit-api reads the grants as LiveKit would.
    verifier = api.TokenVerifier(KEY, SECRET)
    supervisor_token, operator_token = tokens.mint("s", "supervisor", room="r"), tokens.mint("o", "operator", room="r")
    tokens.verify(supervisor_token, CONSOLE), tokens.verify(operator_token, CONSOLE)
    supervisor = verifier.verify(supervisor_token, verify_signature=False)
    operator = verifier.verify(operator_token, verify_signature=False)
    assert supervisor.video.hidden and supervisor.video.room_admin
    assert not operator.video.hidden and not operator.video.room_admin
    assert operator.video.room_join and operator.video.room == "r"


def test_wrong_secret_is_refused(tokens: TokenAuthority):
    forged = TokenAuthority(KEY, "another-secret-another-secret-xx").mint("mallory", "admin")
    with pytest.raises(AuthError, match="invalid token"):
        tokens.verify(forged, CONSOLE)


def test_wrong_key_is_refused(tokens: TokenAuthority):
    other = TokenAuthority("APIother", SECRET).mint("mallory", "admin")
    with pytest.raises(AuthError):
        tokens.verify(other, CONSOLE)


def test_expired_token_is_refused(tokens: TokenAuthority):
    # The verifier allows a minute of clock skew, so expire well beyond it.
    expired = tokens.mint("late", "operator", ttl=dt.timedelta(minutes=-5))
    with pytest.raises(AuthError, match="invalid token"):
        tokens.verify(expired, CONSOLE)


@pytest.mark.parametrize(
    "garbage",
    ["", "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", "Bearer x", "\u00e9\u00e9.\u00e9.\u00e9", "." * 3],
)
def test_garbage_token_is_refused(tokens: TokenAuthority, garbage: str):
    with pytest.raises(AuthError):
        tokens.verify(garbage, CONSOLE)


def test_tampered_token_is_refused(tokens: TokenAuthority):
    token = tokens.mint("op", "operator")
    head, body, sig = token.split(".")
    with pytest.raises(AuthError):
        tokens.verify(".".join([head, body, sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")]), CONSOLE)


def test_unknown_role_cannot_be_minted(tokens: TokenAuthority):
    with pytest.raises(AuthError, match="unknown role 'root'"):
        tokens.mint("x", "root")


@pytest.mark.parametrize("attributes", [{}, {"role": "root"}, {"role": ""}])
def test_token_without_a_switchboard_role_is_refused(tokens: TokenAuthority, attributes: dict):
    # Validly signed, e.g. by another LiveKit tool with the same key, but with no role of ours.
    token = (
        api.AccessToken(KEY, SECRET)
        .with_identity("someone")
        .with_grants(api.VideoGrants(room_join=True, room="r"))
        .with_attributes(attributes)
        .to_jwt()
    )
    claims = jwt.decode(token, options={"verify_signature": False}) | {"aud": CONSOLE}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="no switchboard role"):
        tokens.verify(token, CONSOLE)


@pytest.mark.parametrize("role", ROLES)
def test_a_token_is_refused_by_the_service_it_is_not_for(tokens: TokenAuthority, role: str):
    # A worker's token lifted from its environment cannot open the API, nor a person's the hub socket.
    other = CONSOLE if audience_for(role) == HUB else HUB
    with pytest.raises(AuthError, match="invalid token: Audience doesn't match"):
        tokens.verify(tokens.mint("x", role), other)


def test_a_token_without_an_audience_is_refused(tokens: TokenAuthority):
    # What the appliance minted before tokens named their audience: valid, signed, unexpired.
    plain = (
        api.AccessToken(KEY, SECRET)
        .with_identity("old")
        .with_grants(api.VideoGrants())
        .with_attributes({"role": "admin"})
        .to_jwt()
    )
    with pytest.raises(AuthError, match="aud"):
        tokens.verify(plain, CONSOLE)


def test_a_livekit_verifier_still_reads_our_tokens(tokens: TokenAuthority):
    # The audience claim must not make our tokens unreadable to LiveKit tools (the scale-out path).
    token = tokens.mint("s", "supervisor", room="r")
    assert jwt.decode(token, SECRET, algorithms=["HS256"], audience=CONSOLE)["aud"] == CONSOLE
    assert api.TokenVerifier(KEY, SECRET).verify(token, verify_signature=False).identity == "s"
