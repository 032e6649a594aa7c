"""HTTP API: /healthz (open), /metrics and /api/* (bearer token with a role grant).

Every bad request gets a 4xx with a JSON body saying why; nothing a client sends can
produce a 500. What a call's record shows depends on the role: operators see only the
calls they handled, and only admins see the keys a caller pressed (PINs, card numbers)
and long digit strings in variables and tool arguments. Every route is an `Operation`
(appliance.core.api), and `GET /api/openapi.json` is the document written from them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.console import openapi
from appliance.console.call_records import CallDetail, CallList, CallSummary
from appliance.core.api import Answer, Operation
from appliance.core.errors import AuthError
from appliance.core.masking import MASK, mask_digits
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.recording.formats import CONTENT_TYPES, format_of
from appliance.rooms.tokens import CONSOLE, PERSON_ROLES, Grant, TokenAuthority
from appliance.storage import CallRecord, Storage

log = logging.getLogger(__name__)

GRANT = web.RequestKey("grant", Grant)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Q = TypeVar("Q", bound=BaseModel)
CALL_ID = re.compile(r"^CA[0-9a-f]{8,40}$")
# RFC 7235: the scheme is case-insensitive ("bearer", "BEARER").
BEARER = re.compile(r"^bearer[ \t]+(\S+)[ \t]*$", re.IGNORECASE)


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """Every refusal: a status and a JSON body saying why (an `ErrorBody`)."""
    return web.json_response({"error": message}, status=status, headers=headers)


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


# Each route module's `register`: adds its routes to the app and says what they are.
Routes = Callable[[web.Application], Sequence[Operation]]


def serve(app: web.Application, *routes: tuple[Operation, Handler]) -> list[Operation]:
    """Adds each handler at its operation's method and path, behind `needs` with the operation's
    own roles: the roles the document shows are the roles enforced."""
    for operation, handler in routes:
        checked = needs(*operation.roles)(handler) if operation.roles is not None else handler
        if operation.method == "GET":
            app.router.add_get(operation.path, checked)
        else:
            app.router.add_route(operation.method, operation.path, checked)
    return [operation for operation, _ in routes]


def query(request: web.Request, model: type[Q]) -> Q | web.Response:
    """The query parameters `model` names (the first of repeated ones), or a 400 saying which is wrong."""
    try:
        return model.model_validate({name: request.query[name] for name in model.model_fields
                                     if name in request.query})
    except ValidationError as exc:
        return invalid(exc)


def invalid(exc: ValidationError) -> web.Response:
    """A 400 naming the first thing wrong in a request."""
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return error(400, f"{where}: {first['msg']}")


class CallPath(BaseModel):
    """A route under /api/calls/{call_id}."""

    call_id: str = Field(pattern=CALL_ID.pattern, description="a call's id: CA and 8 to 40 hex digits")


class RangeHeader(BaseModel):
    """The request headers a recording's download reads."""

    range: str | None = Field(None, alias="Range", pattern=r"^bytes=[0-9]*-[0-9]*$",
                       description="bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX: one range of the file")


class RoleHealth(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expected: int
    up: int


class Health(BaseModel):
    """What /healthz says: ok only while every worker the appliance started is connected and the
    SIP edge runs."""

    model_config = ConfigDict(extra="forbid")
    ok: bool
    short: list[str] = Field(description="roles with fewer workers up than started")
    roles: dict[str, RoleHealth] = Field(description="workers started and up, by role (sip, agent, rtc, twilio)")
    edge_running: bool
    workers_up: int
    workers: int
    personas_up: int
    personas: int
    rtc_up: int
    rtc: int
    calls_active: int
    draining: bool


class CallsQuery(BaseModel):
    limit: int = Field(50, ge=1, le=1000, description="how many calls, newest first")


NOT_A_CALL = "the call id is not CA and 8 to 40 hex digits"
AUDIO = tuple(CONTENT_TYPES.values())
OPERATIONS = {
    "healthz": Operation("GET", "/healthz", "Whether the appliance takes calls (open to anyone)", "operations",
                         answers={200: Answer("every worker is up and the SIP edge runs", Health),
                                  503: Answer("a worker is missing (see short) or the SIP edge is down", Health)}),
    "metrics": Operation("GET", "/metrics", "Prometheus metrics", "operations", roles=("admin", "supervisor"),
                         answers={200: Answer("the Prometheus text exposition", media=("text/plain",))}),
    "calls": Operation("GET", "/api/calls", "Recent calls, newest first (an operator's: those they handled)",
                       "calls", roles=PERSON_ROLES, query=CallsQuery,
                       answers={200: Answer("the calls", CallList)}, errors={400: "limit is not 1 to 1000"}),
    "call": Operation("GET", "/api/calls/{call_id}", "One call with its events, recordings and transcript "
                      "(digits masked for all but admins)", "calls", roles=PERSON_ROLES, path_params=CallPath,
                      answers={200: Answer("the call", CallDetail)},
                      errors={400: NOT_A_CALL, 404: "no such call, or (to an operator) not one they handled"}),
    "recording": Operation(
        "GET", "/api/calls/{call_id}/recording", "The call's recording in its stored format (Range requests "
        "answered)", "calls", roles=PERSON_ROLES, path_params=CallPath,
        headers=RangeHeader,
        answers={200: Answer("the whole recording", media=AUDIO, headers={"Accept-Ranges": "bytes"}),
                 206: Answer("the range asked for", media=AUDIO,
                             headers={"Content-Range": "bytes FIRST-LAST/SIZE"})},
        errors={400: NOT_A_CALL, 404: "no such call (or not an operator's own), no recording, or its file is gone",
                410: "retention deleted the recording", 416: "the range is malformed or starts beyond the file "
                "(Content-Range: bytes */SIZE)"}),
}
# For any person with a console token: it maps every route and the roles each lets in, which is
# nothing secret, but an anonymous scanner on the console's port needs no map.
OPENAPI = Operation("GET", "/api/openapi.json", "This API's OpenAPI document", "operations", roles=PERSON_ROLES,
                    answers={200: Answer("the OpenAPI 3.1 document", media=("application/json",))})


class HttpApi:
    def __init__(self, storage: Storage, tokens: TokenAuthority, recordings_dir: Path,
                 health: Callable[[], Health], routes: Sequence[Routes] = ()):
        self.storage = storage
        self.tokens = tokens
        self.recordings_dir = recordings_dir.resolve()
        self.health = health
        self.app = web.Application(middlewares=[self._auth, self._errors])
        operations = serve(self.app, (OPERATIONS["healthz"], self.healthz), (OPERATIONS["metrics"], self.metrics),
                           (OPERATIONS["calls"], self.list_calls), (OPERATIONS["call"], self.get_call),
                           # An operator's own calls only: _call_or_error answers 404 for the others.
                           (OPERATIONS["recording"], self.recording))
        for register in routes:
            operations += register(self.app)
        operations += serve(self.app, (OPENAPI, self.openapi))
        self.operations = tuple(operations)
        missing = openapi.undocumented(self.app.router, self.operations)
        if missing:
            raise RuntimeError(f"routes without an Operation (so not in /api/openapi.json): {', '.join(missing)}")
        self._document = json.dumps(openapi.document(self.operations)).encode()
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
                # Its headers but for the body's: a 405 keeps the Allow that RFC 9110 requires.
                kept = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
                return error(exc.status, exc.reason, headers=kept)
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
        return _json(status, 200 if status.ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self._document, content_type="application/json")

    async def list_calls(self, request: web.Request) -> web.Response:
        asked = query(request, CallsQuery)
        if isinstance(asked, web.Response):
            return asked
        grant = request[GRANT]
        if grant.allows("operator"):
            records = self.storage.calls_handled_by(grant.identity, asked.limit)
        else:
            records = self.storage.recent_calls(asked.limit)
        return _json(CallList(calls=[_summary(c) for c in records]))

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
        return _json(CallDetail(**_summary(call).model_dump(), events=events,
                                recordings=self.storage.recordings(call.id),
                                transcript=self.storage.transcripts(call.id)))

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
        stat = path.stat()
        why = _unsatisfiable(request, stat)
        if why is not None:
            return error(416, why, headers={"Content-Range": f"bytes */{stat.st_size}"})
        # FileResponse answers the satisfiable Range requests itself: 206 with Content-Range.
        return web.FileResponse(path, headers={"Content-Type": CONTENT_TYPES[path.suffix]})


def _json(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(text=model.model_dump_json(), status=status, content_type="application/json")


def _summary(call: CallRecord) -> CallSummary:
    return CallSummary(**dataclasses.asdict(call), duration_s=call.duration_s,
                       recording_format=format_of(Path(call.recording_path)) if call.recording_path else None)


def _unsatisfiable(request: web.Request, stat: os.stat_result) -> str | None:
    """Why the Range asked for cannot be served, judged as FileResponse would judge it, so that
    FileResponse (whose own 416 has no body) is only ever handed ranges it serves."""
    if_range = request.if_range
    if if_range is not None and stat.st_mtime > if_range.timestamp():
        return None  # the file changed since: FileResponse ignores the Range and sends it whole
    try:
        asked = request.http_range
    except ValueError:
        return "Range must be one range: bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX"
    if asked.start is not None and asked.start >= stat.st_size:
        return f"the range starts beyond the recording's {stat.st_size} bytes"
    return None


def _masked(event: dict[str, Any]) -> dict[str, Any]:
    """The event with the caller's secrets hidden: every key pressed, every long digit run."""
    if event["kind"] == "dtmf":
        return event | {"data": event["data"] | {"digit": MASK}}
    return event | {"data": mask_digits(event["data"])}
