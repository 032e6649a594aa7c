"""Draining before an upgrade, over the HTTP API: the routes the appliance serves and the
client `appliance drain` runs, with the one wire format they share.

While draining, the SIP edge answers new INVITEs 503 with Retry-After (carriers fail over)
and calls in progress go on. The state lives in the running appliance only, so a restart
(the new version) takes calls again.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from appliance.console.http import GRANT, error, invalid, serve
from appliance.core.api import Answer, Operation
from appliance.observability.logging import log_extra

__all__ = ["DrainRequest", "DrainStatus", "DrainRoutes", "Outcome", "drain", "undrain"]

log = logging.getLogger(__name__)

PATH = "/api/drain"
MAX_BODY = 1024
REQUEST_TIMEOUT_S = 10.0
POLL_S = 1.0
# A line while nothing changes, so a long wait in a deploy log still shows it is alive.
QUIET_PROGRESS_S = 15.0


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    draining: bool


class DrainStatus(BaseModel):
    draining: bool
    calls_active: int


STATUS = Answer("whether the appliance is draining, and the calls still live", DrainStatus)
GET = Operation("GET", PATH, "Whether new calls are refused, and how many are live", "operations", roles=("admin",),
                answers={200: STATUS})
POST = Operation("POST", PATH, "Start draining (new INVITEs get 503 with Retry-After) or take calls again",
                 "operations", roles=("admin",), body=DrainRequest, answers={200: STATUS},
                 errors={400: "the body is not {\"draining\": true|false}", 413: "the body is over 1 KiB"})


class DrainRoutes:
    """GET and POST /api/drain, for admins only."""

    def __init__(self, set_draining: Callable[[bool], Awaitable[None]], status: Callable[[], DrainStatus]):
        self.set_draining = set_draining
        self.status = status

    def register(self, app: web.Application) -> Sequence[Operation]:
        return serve(app, (GET, self.get), (POST, self.post))

    async def get(self, request: web.Request) -> web.Response:
        return web.json_response(self.status().model_dump())

    async def post(self, request: web.Request) -> web.Response:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return error(413, "request body too large")
        try:
            wanted = DrainRequest.model_validate_json(raw)
        except ValidationError as exc:
            return invalid(exc)
        await self.set_draining(wanted.draining)
        status = self.status()
        log.warning("draining: new calls refused" if wanted.draining else "drain cancelled: taking new calls",
                    extra=log_extra(identity=request[GRANT].identity, calls_active=status.calls_active))
        return web.json_response(status.model_dump())


class Outcome(enum.IntEnum):
    """`appliance drain`'s exit code."""

    DRAINED = 0
    CALLS_LIVE = 1  # the timeout passed (or the drain was cancelled) with calls still up
    UNREACHABLE = 2  # no answer, or the appliance refused the command


class Unreachable(Exception):
    pass


async def _request(session: aiohttp.ClientSession, method: str, url: str, body: DrainRequest | None = None
                   ) -> DrainStatus:
    try:
        async with session.request(method, url, data=body.model_dump_json() if body else None,
                                   headers={"Content-Type": "application/json"}) as response:
            text = await response.text()
            if response.status != 200:
                raise Unreachable(f"{method} {url} answered {response.status}: {text.strip()[:300]}")
            return DrainStatus.model_validate_json(text)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise Unreachable(f"cannot reach the appliance at {url}: {exc or type(exc).__name__}") from None
    except ValidationError:
        raise Unreachable(f"{url} answered something that is no drain status") from None


def _session(token: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))


async def drain(base_url: str, token: str, timeout_s: float, say: Callable[[str], None]) -> Outcome:
    """Start draining and wait until no call is live or `timeout_s` passes, saying how it goes."""
    url = base_url + PATH
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        async with _session(token) as session:
            status = await _request(session, "POST", url, DrainRequest(draining=True))
            say(f"draining: new calls get 503; {status.calls_active} calls live")
            last_said, last_count = loop.time(), status.calls_active
            while status.calls_active > 0:
                if loop.time() >= deadline:
                    say(f"timed out after {timeout_s:g} s: {status.calls_active} calls still live "
                        "(still draining; `appliance drain --cancel` takes calls again)")
                    return Outcome.CALLS_LIVE
                await asyncio.sleep(min(POLL_S, max(0.0, deadline - loop.time())))
                status = await _request(session, "GET", url)
                if not status.draining:
                    say(f"no longer draining (cancelled, or the appliance restarted); {status.calls_active} calls live")
                    return Outcome.CALLS_LIVE
                if status.calls_active != last_count or loop.time() - last_said >= QUIET_PROGRESS_S:
                    say(f"{status.calls_active} calls live, {max(0.0, deadline - loop.time()):.0f} s left")
                    last_said, last_count = loop.time(), status.calls_active
    except Unreachable as exc:
        say(str(exc))
        return Outcome.UNREACHABLE
    say("drained: no calls live")
    return Outcome.DRAINED


async def undrain(base_url: str, token: str, say: Callable[[str], None]) -> Outcome:
    """Take new calls again."""
    try:
        async with _session(token) as session:
            status = await _request(session, "POST", base_url + PATH, DrainRequest(draining=False))
    except Unreachable as exc:
        say(str(exc))
        return Outcome.UNREACHABLE
    say(f"taking new calls again; {status.calls_active} calls live")
    return Outcome.DRAINED
