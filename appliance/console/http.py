"""HTTP API: /healthz (open), /metrics and /api/* (bearer token with a role grant).

Every bad request gets a 4xx with a JSON body saying why; nothing a client sends can
produce a 500. What a call's record shows depends on the role (`CallView`): operators
see only the calls they handled, and only admins see the keys a caller pressed (PINs,
card numbers) and long digit strings in variables and tool arguments.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.core.errors import AuthError
from appliance.core.masking import MASK, mask_digits
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.recording.formats import CONTENT_TYPES, format_of
from appliance.rooms.tokens import CONSOLE, Grant, TokenAuthority
from appliance.storage import Storage

log = logging.getLogger(__name__)

GRANT = web.RequestKey("grant", Grant)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALL_ID = re.compile(r"^CA[0-9a-f]{8,40}$")
# RFC 7235: the scheme is case-insensitive ("bearer", "BEARER").
BEARER = re.compile(r"^bearer[ \t]+(\S+)[ \t]*$", re.IGNORECASE)


def error(status: int, message: str) -> web.Response:
    """Every refusal: a status and a JSON body saying why."""
    return web.json_response({"error": message}, status=status)


def needs(*roles: str) -> Callable[[Handler], Handler]:
    """The route answers only a token with one of `roles` (401 without one, 403 with another)."""
    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            grant: Grant | None = request.get(GRANT)
            if grant is None:
                log.warning("request refused: no valid token", extra=log_extra(path=request.path,
                                                                             source=request.remote))
                return error(401, "missing or invalid bearer token")
            if not grant.allows(*roles):
                log.warning("request refused: role", extra=log_extra(path=request.path, identity=grant.identity,
                                                                     role=grant.role, source=request.remote))
                return error(403, f"needs one of the roles: {', '.join(roles)}")
            return await handler(request)

        return checked

    return wrap


class HttpApi:
    def __init__(self, storage: Storage, tokens: TokenAuthority, recordings_dir: Path,
                 health: Callable[[], dict[str, Any]], routes: Sequence[Callable[[web.Application], None]] = ()):
        self.storage = storage
        self.tokens = tokens
        self.recordings_dir = recordings_dir.resolve()
        self.health = health
        self.app = web.Application(middlewares=[self._auth, self._errors])
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/metrics", needs("admin", "supervisor")(self.metrics))
        self.app.router.add_get("/api/calls", needs("operator", "supervisor", "admin")(self.list_calls))
        self.app.router.add_get("/api/calls/{call_id}", needs("operator", "supervisor", "admin")(self.get_call))
        # An operator's own calls only: _call_or_error answers 404 for the others.
        self.app.router.add_get("/api/calls/{call_id}/recording",
                                needs("operator", "supervisor", "admin")(self.recording))
        for register in routes:
            register(self.app)
        self._runner: web.AppRunner | None = None

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        match = BEARER.match(request.headers.get("Authorization", ""))
        if match:
            try:
                request[GRANT] = self.tokens.verify(match.group(1), CONSOLE)
            except AuthError:
                pass  # open routes ignore it; protected ones answer 401 for lack of a grant
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error(exc.status, exc.reason)
            raise
        except Exception:
            log.exception("request failed", extra={"fields": {"path": request.path}})
            return error(503, "the appliance could not answer this request; see its log")

    async def start(self, host: str, port: int, tls: tuple[str, int, ssl.SSLContext] | None = None) -> None:
        """Plain HTTP on (host, port) (loopback by default: /healthz, /metrics); with `tls`, the
        same routes over HTTPS for browsers, which give a page the microphone only on a secure origin."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        if tls is not None:
            await web.TCPSite(self._runner, tls[0], tls[1], ssl_context=tls[2]).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def healthz(self, request: web.Request) -> web.Response:
        status = self.health()
        return web.json_response(status, status=200 if status.get("ok") else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def list_calls(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            return error(400, "limit must be an integer")
        if not 1 <= limit <= 1000:
            return error(400, "limit must be between 1 and 1000")
        grant = request[GRANT]
        if grant.allows("operator"):
            records = self.storage.calls_handled_by(grant.identity, limit)
        else:
            records = self.storage.recent_calls(limit)
        calls = [dataclasses.asdict(c) | {"duration_s": c.duration_s, "recording_format": _format(c.recording_path)}
                 for c in records]
        return web.json_response({"calls": calls})

    def _call_orerror(self, request: web.Request) -> Any:
        call_id = request.match_info["call_id"]
        if not CALL_ID.fullmatch(call_id):
            return error(400, "not a call id")
        call = self.storage.get_call(call_id)
        if call is None:
            return error(404, "no such call")
        grant = request[GRANT]
        if grant.allows("operator") and not self.storage.handled_by(call.id, grant.identity):
            # 404, not 403: an operator learns nothing about calls that are not theirs.
            return error(404, "no such call")
        return call

    async def get_call(self, request: web.Request) -> web.Response:
        call = self._call_orerror(request)
        if isinstance(call, web.Response):
            return call
        events = list(self.storage.events(call.id))
        if not request[GRANT].allows("admin"):
            events = [_masked(event) for event in events]
        body = dataclasses.asdict(call) | {
            "duration_s": call.duration_s,
            "recording_format": _format(call.recording_path),
            "events": events,
            "recordings": self.storage.recordings(call.id),
            "transcript": self.storage.transcripts(call.id),
        }
        return web.Response(text=json.dumps(body, default=str), content_type="application/json")

    async def recording(self, request: web.Request) -> web.StreamResponse:
        call = self._call_orerror(request)
        if isinstance(call, web.Response):
            return call
        if not call.recording_path:
            return error(404, "this call has no recording")
        if call.recording_pruned_at:
            return error(410, f"this call's recording was deleted by retention (appliance recordings prune) "
                              f"at {call.recording_pruned_at}")
        path = Path(call.recording_path).resolve()
        if self.recordings_dir not in path.parents or not path.is_file() or path.suffix not in CONTENT_TYPES:
            return error(404, "recording file is missing")
        # FileResponse answers Range requests itself: 206 with Content-Range, 416 beyond the file.
        return web.FileResponse(path, headers={"Content-Type": CONTENT_TYPES[path.suffix]})


def _format(recording_path: str | None) -> str | None:
    """How a recording is stored (wav, ogg_opus, flac), from its file's suffix."""
    found = format_of(Path(recording_path)) if recording_path else None
    return found.value if found else None


def _masked(event: dict[str, Any]) -> dict[str, Any]:
    """The event with the caller's secrets hidden: every key pressed, every long digit run."""
    if event["kind"] == "dtmf":
        return event | {"data": event["data"] | {"digit": MASK}}
    return event | {"data": mask_digits(event["data"])}
