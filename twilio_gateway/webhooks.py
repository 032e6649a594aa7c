"""Twilio's HTTP side: the voice webhook (TwiML), the status callback, and the Media Streams socket.

Every webhook is checked with `twilio.request_validator.RequestValidator` against the URL Twilio
called (`twilio.public_url` + path), never the one the box sees behind a TLS-terminating proxy;
a missing or wrong `X-Twilio-Signature` gets a 403 (the API's JSON error body, which says no more
than the status) and a log line. TwiML is built with `twilio.twiml.voice_response`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from aiohttp import web
from multidict import MultiDict
from pydantic import BaseModel, ConfigDict, Field
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from appliance.config import TwilioConfig
from appliance.core.api import Answer, ErrorBody, Operation
from appliance.observability.logging import log_extra
from twilio_gateway.tickets import StreamTickets

__all__ = ["MEDIA", "OPERATIONS", "STATUS", "VOICE", "Webhooks"]

log = logging.getLogger(__name__)

VOICE, STATUS, MEDIA = "/twilio/voice", "/twilio/status", "/twilio/media"
CALL_SID = re.compile(r"^CA[0-9a-fA-F]{32}$")
# What we put in a SIP URI or hand to the hub as a number: digits and a leading +, as Twilio sends them.
NUMBER = re.compile(r"^\+?[0-9*#]{1,32}$")
MAX_FORM = 64 * 1024  # Twilio's webhook forms are a few hundred bytes
SIGNATURE = "X-Twilio-Signature"
FORM = "application/x-www-form-urlencoded"


class _Form(BaseModel):
    # Twilio sends many more fields (AccountSid, Direction, ...); only these are read.
    model_config = ConfigDict(extra="ignore")
    call_sid: str = Field("", alias="CallSid", description="CA and 32 hex digits")


class VoiceForm(_Form):
    caller: str = Field("", alias="From", description="the caller's number")
    called: str = Field("", alias="To", description="the number dialled")


class StatusForm(_Form):
    call_status: str = Field("", alias="CallStatus")
    call_duration: str = Field("", alias="CallDuration")
    sip_response_code: str = Field("", alias="SipResponseCode")


FORGED = "X-Twilio-Signature missing or not Twilio's for this URL and form, or the form is over 64 KiB"
REFUSED = {400: "the form is not text in its charset", 403: FORGED, 415: f"the body is not {FORM}"}
OPERATIONS = (
    Operation("POST", VOICE, "Twilio's voice webhook: TwiML that streams the call (or dials the box's SIP)",
              "twilio", form=VoiceForm, signature_header=SIGNATURE,
              answers={200: Answer("TwiML: <Connect><Stream>, <Dial><Sip>, <Reject>, or <Hangup> for a call that "
                                   "had its stream (a replay)", media=("application/xml",))},
              errors=REFUSED),
    Operation("POST", STATUS, "Twilio's status callback: the call's progress becomes its events", "twilio",
              form=StatusForm, signature_header=SIGNATURE, answers={204: Answer("noted")}, errors=REFUSED),
    Operation("GET", MEDIA, "Twilio Media Streams: the call's audio both ways over a WebSocket (its start "
              "message brings the voice webhook's one-use token)", "twilio", websocket=True,
              errors={400: "not a WebSocket upgrade"}),
)


class Webhooks:
    def __init__(self, config: TwilioConfig, auth_token: str, tickets: StreamTickets,
                 accepting: Callable[[], bool], status: Callable[[str, dict[str, str]], None]):
        assert config.public_url is not None  # TwilioConfig.check
        self.config = config
        self.public_url = config.public_url.rstrip("/")
        self.validator = RequestValidator(auth_token)
        self.tickets = tickets
        self.accepting = accepting  # joined to the hub, with room for another stream
        self.status = status  # (CallSid, the callback's fields) → the call's events

    def register(self, app: web.Application, media: Callable[[web.Request], object]) -> Sequence[Operation]:
        app.router.add_post(VOICE, self.voice)
        app.router.add_post(STATUS, self.status_callback)
        app.router.add_get(MEDIA, media)  # type: ignore[arg-type]
        return OPERATIONS

    async def _signed_form(self, request: web.Request) -> MultiDict[str] | web.Response:
        """The form, if Twilio signed it for the public URL of this path; the refusal (logged) if not."""
        if request.content_length is not None and request.content_length > MAX_FORM:
            log.warning("Twilio webhook refused: body too large", extra=log_extra(path=request.path))
            return _forged()
        # Twilio sends nothing else; refused before parsing, as aiohttp's multipart parser raises
        # on a multipart type without a boundary.
        if request.content_type != FORM:
            log.warning("Twilio webhook refused: not a form", extra=log_extra(path=request.path,
                                                                             content_type=request.content_type[:80]))
            return _error(415, f"Twilio's webhooks are {FORM}")
        try:
            form = await request.post()
        except (ValueError, LookupError):  # not text in its charset (UnicodeDecodeError), or no such charset
            log.warning("Twilio webhook refused: form unreadable", extra=log_extra(path=request.path))
            return _error(400, "the form is not text in its charset")
        fields = MultiDict((k, v) for k, v in form.items() if isinstance(v, str))
        url = self.public_url + request.rel_url.path_qs
        signature = request.headers.get(SIGNATURE, "")
        if not signature or not self.validator.validate(url, fields, signature):
            log.warning("Twilio webhook refused: signature missing or wrong",
                        extra=log_extra(path=request.path, source=request.remote, signed=bool(signature)))
            return _forged()
        return fields

    async def voice(self, request: web.Request) -> web.Response:
        form = await self._signed_form(request)
        if isinstance(form, web.Response):
            return form
        asked = VoiceForm.model_validate(dict(form))
        call_sid, called = asked.call_sid, asked.called
        caller = asked.caller if NUMBER.fullmatch(asked.caller) else "anonymous"
        response = VoiceResponse()
        if not CALL_SID.fullmatch(call_sid) or not NUMBER.fullmatch(called):
            log.warning("Twilio voice webhook without a call we can take",
                        extra=log_extra(call_sid=call_sid[:40], pii={"to": called[:40]}))
            response.reject()
        elif self.config.mode == "sip":
            response.dial().sip(f"sip:{called}@{self.config.sip_host}")
        elif not self.accepting():
            log.warning("Twilio call rejected: the gateway is not joined to the hub or is full",
                        extra=log_extra(call_sid=call_sid))
            response.reject(reason="busy")
        elif (token := self.tickets.issue(call_sid, caller, called)) is None:
            # A replay of a signed webhook (or Twilio asking again after the stream): <Hangup/>, not
            # a 4xx, which would make Twilio fetch the number's fallback URL and go on elsewhere.
            log.warning("Twilio voice webhook for a call that had its stream: hung up",
                        extra=log_extra(call_sid=call_sid, source=request.remote))
            response.hangup()
        else:
            connect = Connect()
            stream = connect.stream(url=self._media_url())
            for name, value in (("caller", caller), ("called", called), ("call_sid", call_sid), ("token", token)):
                stream.parameter(name=name, value=value)
            response.append(connect)
            log.info("Twilio call answered with a media stream",
                     extra=log_extra(call_sid=call_sid, pii={"from": caller, "to": called}))
        return web.Response(text=str(response), content_type="application/xml")

    async def status_callback(self, request: web.Request) -> web.Response:
        form = await self._signed_form(request)
        if isinstance(form, web.Response):
            return form
        asked = StatusForm.model_validate(dict(form))
        if CALL_SID.fullmatch(asked.call_sid):
            # Only the fields Twilio sent (unset ones are not its).
            self.status(asked.call_sid, asked.model_dump(by_alias=True, exclude={"call_sid"}, exclude_unset=True))
        return web.Response(status=204)

    def _media_url(self) -> str:
        public = urlsplit(self.public_url)
        return f"wss://{public.netloc}{public.path}{MEDIA}"


def _error(status: int, message: str) -> web.Response:
    return web.json_response(ErrorBody(error=message).model_dump(), status=status)


def _forged() -> web.Response:
    return _error(403, "signature missing or wrong")
