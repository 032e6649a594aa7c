"""Signed per-participant grants, as LiveKit access tokens so they also work on a LiveKit server.

Roles: `operator`, `supervisor`, `admin` (people, through the console and API), `sip` (the
SIP gateway's workers), `agent` (persona workers), `rtc` (WebRTC gateway workers), `twilio`
(the Twilio Media Streams gateway, whose calls arrive as a SIP worker's do). The role
travels as a token attribute; the room-level permissions travel as LiveKit video grants. Each token also names its
audience, the one service that accepts it: a worker's token opens the hub's participant
socket and nothing else, a person's opens the console and API and nothing else, so a
token lifted from one place is useless in the other.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import jwt
from livekit import api

from appliance.core.errors import AuthError

ROLES = ("operator", "supervisor", "admin", "sip", "agent", "rtc", "twilio")
PERSON_ROLES = ("operator", "supervisor", "admin")
WORKER_ROLES = ("sip", "agent", "rtc", "twilio")
HUB = "switchboard-hub"  # the participant protocol socket
CONSOLE = "switchboard-console"  # the HTTP API and console
# Workers present their token once, at hello; a person's session is a working day.
DEFAULT_TTL = {role: dt.timedelta(hours=12) for role in WORKER_ROLES}
PERSON_TTL = dt.timedelta(hours=12)


def audience_for(role: str) -> str:
    return HUB if role in WORKER_ROLES else CONSOLE


@dataclass(frozen=True)
class Grant:
    identity: str
    role: str
    room: str | None

    def allows(self, *roles: str) -> bool:
        return self.role in roles


class TokenAuthority:
    def __init__(self, api_key: str, api_secret: str):
        self.api_key = api_key
        self.api_secret = api_secret
        self._verifier = api.TokenVerifier(api_key, api_secret)

    def mint(self, identity: str, role: str, room: str | None = None, ttl: dt.timedelta | None = None) -> str:
        if role not in ROLES:
            raise AuthError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        grants = api.VideoGrants(
            room_join=room is not None,
            room=room or "",
            room_admin=role in ("supervisor", "admin", "sip", "twilio"),
            room_list=role in ("supervisor", "admin"),
            room_record=role == "admin",
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
            hidden=role == "supervisor",
            agent=role == "agent",
        )
        token = (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_grants(grants)
            .with_attributes({"role": role})
            .with_ttl(ttl or DEFAULT_TTL.get(role, PERSON_TTL))
        )
        # livekit-api has no audience setter: re-sign its claims with `aud` added. A LiveKit
        # server ignores the claim, so the token stays a valid LiveKit token.
        claims = jwt.decode(token.to_jwt(), options={"verify_signature": False})
        claims["aud"] = audience_for(role)
        return jwt.encode(claims, self.api_secret, algorithm="HS256")

    def verify(self, token: str, audience: str) -> Grant:
        """The grant in `token` if it is signed by us, unexpired, and meant for `audience`."""
        try:
            # Signature, issuer, expiry and audience here; livekit-api then parses the grants.
            jwt.decode(token, key=self.api_secret, issuer=self.api_key, audience=audience, algorithms=["HS256"],
                       leeway=60, options={"require": ["exp", "aud", "sub"]})
            claims = self._verifier.verify(token, verify_signature=False)
        except Exception as exc:  # jwt and livekit-api raise many error types
            raise AuthError(f"invalid token: {exc}") from exc
        role = (claims.attributes or {}).get("role")
        if role not in ROLES:
            raise AuthError("token carries no switchboard role")
        if audience_for(role) != audience:
            raise AuthError(f"a {role} token is not for {audience}")
        room = claims.video.room if claims.video and claims.video.room else None
        return Grant(identity=claims.identity, role=role, room=room)


def worker_identity(role: str, name: str) -> str:
    """The identity in a worker's token; the hub admits its hello only under this name."""
    return f"{role}-{name}"
