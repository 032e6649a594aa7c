"""The console's own routes: the page, login, and WebRTC signalling (one offer, one answer).

Login trades a username and password for a signed console token (the same grants every
API route checks); it is rate-limited per user and per address. Signalling carries the
browser's SDP offer to a WebRTC gateway worker through the desk and returns the answer:
aiortc gathers every candidate before answering, so there is nothing to trickle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.console.http import GRANT, error, needs
from appliance.console.login import LoginGuard
from appliance.observability.logging import log_extra
from appliance.operators.accounts import Accounts
from appliance.operators.desk import Desk, DeskError
from appliance.rooms.protocol import MAX_SDP
from appliance.rooms.tokens import PERSON_TTL, TokenAuthority

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
    sdp: str = Field(min_length=1, max_length=MAX_SDP)
    type: str = "offer"


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

    def register(self, app: web.Application) -> None:
        for path in PAGES:
            app.router.add_get(path, self.page)
        app.router.add_post("/api/login", self.login)
        app.router.add_get("/api/me", needs("operator", "supervisor", "admin")(self.me))
        app.router.add_post("/api/rtc/offer", needs("operator", "supervisor", "admin")(self.offer))

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
        return web.json_response({"token": token, "identity": account.username, "role": account.role,
                                  "queues": self.queues_of(account.username, account.queues),
                                  "expires_in": int(PERSON_TTL.total_seconds()),
                                  "all_queues": sorted(self.desk.acd.queues), "ice_servers": self.ice_servers()})

    async def me(self, request: web.Request) -> web.Response:
        grant = request[GRANT]
        account = self.accounts.get(grant.identity)
        if account is None or account.disabled:
            return error(403, "this account is disabled or gone")
        return web.json_response({"identity": account.username, "role": account.role,
                                  "queues": self.queues_of(account.username, account.queues),
                                  "all_queues": sorted(self.desk.acd.queues), "ice_servers": self.ice_servers()})

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
        return web.json_response({"type": "answer", "sdp": answer})


async def _parse(request: web.Request, model: type[_Body]) -> Any:
    if request.content_length is not None and request.content_length > 2 * MAX_SDP:
        return error(413, "request body too large")
    try:
        raw = await request.read()
        if len(raw) > 2 * MAX_SDP:
            return error(413, "request body too large")
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        return error(400, f"{where}: {first['msg']}")
