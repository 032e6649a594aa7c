"""The console's own routes: the page, login, and WebRTC signalling (one offer, one answer).

Login trades a username and password for a signed console token (the same grants every
API route checks); it is rate-limited per user and per address. Signalling carries the
browser's SDP offer to a WebRTC gateway worker through the desk and returns the answer:
aiortc gathers every candidate before answering, so there is nothing to trickle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.console.http import GRANT, error, invalid, serve
from appliance.console.login import LoginGuard
from appliance.core.api import Answer, Operation
from appliance.observability.logging import log_extra
from appliance.operators.accounts import Accounts
from appliance.operators.desk import Desk, DeskError
from appliance.rooms.protocol import MAX_SDP
from appliance.rooms.tokens import PERSON_ROLES, PERSON_TTL, TokenAuthority

log = logging.getLogger(__name__)

STATIC = resources.files("appliance.console") / "static"
# Small and fixed: the console's files are few and named here, so no path from a request
# ever reaches the file system.
PAGES = {"/": ("index.html", "text/html"), "/console.js": ("console.js", "text/javascript"),
         "/console.css": ("console.css", "text/css")}
# No inline script, nothing from elsewhere: what the console runs is only what we serve.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(_Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class OfferRequest(_Body):
    sdp: str = Field(min_length=1, max_length=MAX_SDP, description="the browser's SDP offer, with an audio section")
    type: str = Field("offer", description="offer (anything else is refused)")


class IceServer(BaseModel):
    """Where the browser gathers candidates: console.ice_servers, with the TURN credential."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class Me(BaseModel):
    identity: str
    role: str
    queues: list[str] = Field(description="the queues this person serves")
    all_queues: list[str]
    ice_servers: list[IceServer]


class LoggedIn(Me):
    token: str = Field(description="the console bearer token for every other route")
    expires_in: int = Field(description="seconds the token is good for")


class RtcAnswer(BaseModel):
    type: Literal["answer"] = "answer"
    sdp: str


DISABLED = "the account behind the token is disabled or gone"
BODY = "the body is not valid JSON of this schema"
TOO_LARGE = "the body is over 128 KiB"
PAGES_OPERATIONS = {path: Operation("GET", path, f"The console's {name}", "console",
                                    answers={200: Answer(name, media=(media,))})
                    for path, (name, media) in PAGES.items()}
LOGIN = Operation("POST", "/api/login", "Trade a console account's username and password for a token", "console",
                  body=LoginRequest, answers={200: Answer("logged in", LoggedIn)},
                  errors={400: BODY, 401: "wrong username or password (or no such user)", 413: TOO_LARGE,
                          429: "too many failed logins for this user or from this address (Retry-After: seconds)"})
ME = Operation("GET", "/api/me", "Who the token belongs to, their queues and ICE servers", "console",
               roles=PERSON_ROLES, answers={200: Answer("the token's person", Me)}, errors={403: DISABLED})
OFFER = Operation("POST", "/api/rtc/offer", "A browser's WebRTC offer for its audio and control channel; the "
                  "answer holds every candidate (nothing to trickle)", "console", roles=PERSON_ROLES,
                  body=OfferRequest, answers={200: Answer("the WebRTC gateway's answer", RtcAnswer)},
                  errors={400: f"{BODY}, no audio section, or the gateway refused the offer", 403: DISABLED,
                          413: TOO_LARGE, 503: "no WebRTC gateway can take a session now",
                          504: "the WebRTC gateway did not answer"})


class OperatorRoutes:
    def __init__(self, accounts: Accounts, guard: LoginGuard, tokens: TokenAuthority, desk: Desk,
                 queues_of: Callable[[str, tuple[str, ...]], list[str]],
                 ice_servers: Callable[[], list[dict[str, Any]]]):

        self.accounts = accounts
        self.guard = guard
        self.tokens = tokens
        self.desk = desk
        self.queues_of = queues_of  # an operator's queues: their account's plus queues.yaml's
        self.ice_servers = ice_servers

    def register(self, app: web.Application) -> Sequence[Operation]:
        return serve(app, *((operation, self.page) for operation in PAGES_OPERATIONS.values()), (LOGIN, self.login),
                     (ME, self.me), (OFFER, self.offer))

    async def page(self, request: web.Request) -> web.Response:
        name, content_type = PAGES[request.path]
        return web.Response(body=(STATIC / name).read_bytes(), content_type=content_type, charset="utf-8",
                            headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                                     "Cache-Control": "no-cache", "Referrer-Policy": "no-referrer"})

    async def login(self, request: web.Request) -> web.Response:
        body = await _parse(request, LoginRequest)
        if isinstance(body, web.Response):
            return body
        source = request.remote or "?"
        wait = self.guard.retry_after(body.username, source)
        if wait is not None:
            log.warning("login refused: too many failures", extra=log_extra(source=source,
                                                                             pii={"username": body.username}))
            return web.json_response({"error": "too many failed logins; try again later"}, status=429,
                                     headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        account = self.accounts.verify(body.username, body.password)
        if account is None:
            self.guard.failed(body.username, source)
            log.warning("login failed", extra=log_extra(source=source, pii={"username": body.username}))
            return error(401, "wrong username or password")
        self.guard.succeeded(body.username, source)
        token = self.tokens.mint(account.username, account.role)
        log.info("login", extra=log_extra(operator=account.username, role=account.role, source=source))
        return _json(LoggedIn(token=token, identity=account.username, role=account.role,
                              queues=self.queues_of(account.username, account.queues),
                              expires_in=int(PERSON_TTL.total_seconds()), all_queues=sorted(self.desk.acd.queues),
                              ice_servers=self.ice_servers()))

    async def me(self, request: web.Request) -> web.Response:
        grant = request[GRANT]
        account = self.accounts.get(grant.identity)
        if account is None or account.disabled:
            return error(403, "this account is disabled or gone")
        return _json(Me(identity=account.username, role=account.role,
                        queues=self.queues_of(account.username, account.queues),
                        all_queues=sorted(self.desk.acd.queues), ice_servers=self.ice_servers()))

    async def offer(self, request: web.Request) -> web.Response:
        grant = request[GRANT]
        # A token outlives an account disabled since it was minted: the account decides.
        account = self.accounts.get(grant.identity)
        if account is None or account.disabled:
            return error(403, "this account is disabled or gone")
        body = await _parse(request, OfferRequest)
        if isinstance(body, web.Response):
            return body
        if body.type != "offer" or "m=audio" not in body.sdp:
            return error(400, "an SDP offer with an audio section is needed")
        try:
            answer = await self.desk.connect(account.username, account.role,
                                             self.queues_of(account.username, account.queues), body.sdp)
        except DeskError as exc:
            return error(exc.status, str(exc))
        return _json(RtcAnswer(sdp=answer))


def _json(answer: BaseModel) -> web.Response:
    # Without the unset optional fields: an ICE server without a username has none, not a null one.
    return web.json_response(answer.model_dump(mode="json", exclude_none=True))


async def _parse(request: web.Request, model: type[_Body]) -> Any:
    if request.content_length is not None and request.content_length > 2 * MAX_SDP:
        return error(413, "request body too large")
    try:
        raw = await request.read()
        if len(raw) > 2 * MAX_SDP:
            return error(413, "request body too large")
        return model.model_validate_json(raw)
    except ValidationError as exc:
        return invalid(exc)
