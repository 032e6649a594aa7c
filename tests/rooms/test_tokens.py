"""Grants: who may do what, carried in signed LiveKit access tokens."""

from __future__ import annotations

import datetime as dt

import pytest
from livekit import api

from appliance.core.errors import AuthError
from appliance.rooms.tokens import ROLES, Grant, TokenAuthority

KEY, SECRET = "APIswitchboard", "s3cret-s3cret-s3cret-s3cret-s3cret"


@pytest.fixture
def tokens() -> TokenAuthority:
    return TokenAuthority(KEY, SECRET)


@pytest.mark.parametrize("role", ROLES)
def test_mint_and_verify_each_role(tokens: TokenAuthority, role: str):
    grant = tokens.verify(tokens.mint(f"{role}-1", role))
    assert grant == Grant(identity=f"{role}-1", role=role, room=None)
    assert grant.allows(role)
    assert not grant.allows(*(r for r in ROLES if r != role))


def test_room_travels_in_the_grant(tokens: TokenAuthority):
    grant = tokens.verify(tokens.mint("worker-1", "sip", room="CAabc123"))
    assert grant.room == "CAabc123"


def test_livekit_grants_follow_the_role(tokens: TokenAuthority):
    verifier = api.TokenVerifier(KEY, SECRET)
    supervisor = verifier.verify(tokens.mint("s", "supervisor", room="r"))
    operator = verifier.verify(tokens.mint("o", "operator", room="r"))
    assert supervisor.video.hidden and supervisor.video.room_admin
    assert not operator.video.hidden and not operator.video.room_admin
    assert operator.video.room_join and operator.video.room == "r"


def test_wrong_secret_is_refused(tokens: TokenAuthority):
    forged = TokenAuthority(KEY, "another-secret-another-secret-xx").mint("mallory", "admin")
    with pytest.raises(AuthError, match="invalid token"):
        tokens.verify(forged)


def test_wrong_key_is_refused(tokens: TokenAuthority):
    other = TokenAuthority("APIother", SECRET).mint("mallory", "admin")
    with pytest.raises(AuthError):
        tokens.verify(other)


def test_expired_token_is_refused(tokens: TokenAuthority):
    # The verifier allows a minute of clock skew, so expire well beyond it.
    expired = tokens.mint("late", "operator", ttl=dt.timedelta(minutes=-5))
    with pytest.raises(AuthError, match="invalid token"):
        tokens.verify(expired)


@pytest.mark.parametrize(
    "garbage",
    ["", "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", "Bearer x", "\u00e9\u00e9.\u00e9.\u00e9", "." * 3],
)
def test_garbage_token_is_refused(tokens: TokenAuthority, garbage: str):
    with pytest.raises(AuthError):
        tokens.verify(garbage)


def test_tampered_token_is_refused(tokens: TokenAuthority):
    token = tokens.mint("op", "operator")
    head, body, sig = token.split(".")
    with pytest.raises(AuthError):
        tokens.verify(".".join([head, body, sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")]))


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
    with pytest.raises(AuthError, match="no switchboard role"):
        tokens.verify(token)
