"""Signed per-participant grants, as LiveKit access tokens so they also work on a LiveKit server.

Roles: `operator`, `supervisor`, `admin` (people, through the console and API), `sip` (the
SIP gateway's workers), `agent` (persona workers). The role travels as a token attribute;
the room-level permissions travel as LiveKit video grants.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from livekit import api

from appliance.core.errors import AuthError

ROLES = ("operator", "supervisor", "admin", "sip", "agent")


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
            room_admin=role in ("supervisor", "admin", "sip"),
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
            .with_ttl(ttl or dt.timedelta(hours=12))
        )
        return token.to_jwt()

    def verify(self, token: str) -> Grant:
        try:
            claims = self._verifier.verify(token)
        except Exception as exc:  # the verifier raises jwt's many error types
            raise AuthError(f"invalid token: {exc}") from exc
        role = (claims.attributes or {}).get("role")
        if role not in ROLES:
            raise AuthError("token carries no switchboard role")
        room = claims.video.room if claims.video and claims.video.room else None
        return Grant(identity=claims.identity, role=role, room=room)
