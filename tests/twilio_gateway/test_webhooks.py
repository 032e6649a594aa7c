"""The voice webhook and status callback over real HTTP, signed by the `twilio` package as Twilio signs.

Twilio signs the URL it called (the public https one); behind a TLS-terminating proxy the box
sees http://127.0.0.1:PORT, so a signature is good only for the configured public URL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from appliance.config import TwilioConfig
from tests.support.media_streams import Twilio, TwiML, new_sid, signed_post_headers
from twilio_gateway.tickets import StreamTickets
from twilio_gateway.webhooks import Webhooks

TOKEN = "0123456789abcdef0123456789abcdef"
ACCOUNT = "AC" + "ab" * 16
CALLER, NUMBER = "+15557654321", "+15550100"


@dataclass
class Box:
    twilio: Twilio
    tickets: StreamTickets
    session: aiohttp.ClientSession
    statuses: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    accepting: bool = True


async def _no_media(request: web.Request) -> web.Response:
    return web.Response(status=426)


async def _box(public_url: str, **settings: object) -> AsyncIterator[Box]:
    config = TwilioConfig(enabled=True, public_url=public_url, account_sid=ACCOUNT, **settings)  # type: ignore[arg-type]
    tickets = StreamTickets(30)
    box: Box
    webhooks = Webhooks(config, TOKEN, tickets, lambda: box.accepting,
                        lambda sid, fields: box.statuses.append((sid, fields)))
    app = web.Application()
    webhooks.register(app, _no_media)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        box = Box(Twilio(ACCOUNT, TOKEN, public_url, str(server.make_url("")).rstrip("/")), tickets, session)
        yield box


@pytest.fixture
async def box() -> AsyncIterator[Box]:
    async for made in _box("https://switchboard.example.com"):
        yield made


def _form(call_sid: str | None = None) -> dict[str, str]:
    return {"AccountSid": ACCOUNT, "CallSid": call_sid or new_sid("CA"), "From": CALLER, "To": NUMBER,
            "CallStatus": "ringing"}


async def test_a_signed_voice_webhook_gets_a_stream_with_a_ticket_for_its_call(box: Box) -> None:
    call_sid, twiml = await box.twilio.voice(box.session, CALLER, NUMBER)
    assert twiml.stream_url == "wss://switchboard.example.com/twilio/media"
    assert twiml.parameters["caller"] == CALLER and twiml.parameters["called"] == NUMBER
    assert twiml.parameters["call_sid"] == call_sid
    ticket = box.tickets.redeem(twiml.parameters["token"], call_sid)
    assert (ticket.caller, ticket.called) == (CALLER, NUMBER)


@pytest.mark.parametrize("signature", ["", "forged"])
async def test_a_missing_or_forged_signature_gets_a_403_saying_only_that_and_a_log_line(
        box: Box, signature: str, caplog: pytest.LogCaptureFixture) -> None:
    forged = signed_post_headers("another-accounts-token", box.twilio.public_url + "/twilio/voice", _form())
    with caplog.at_level(logging.WARNING):
        status, body = await box.twilio.post(box.session, "/twilio/voice", _form(),
                                             signature=forged["X-Twilio-Signature"] if signature else "")
    assert (status, json.loads(body)) == (403, {"error": "signature missing or wrong"})
    assert [r.getMessage() for r in caplog.records] == ["Twilio webhook refused: signature missing or wrong"]


async def test_a_signature_for_the_url_the_box_sees_is_refused_behind_a_proxy(box: Box) -> None:
    # What a proxy forwards to: right token, wrong URL. Twilio never signs this one.
    status, _ = await box.twilio.post(box.session, "/twilio/voice", _form(),
                                      sign_url=box.twilio.box_url + "/twilio/voice")
    assert status == 403


async def test_a_signature_for_another_path_is_refused(box: Box) -> None:
    status, _ = await box.twilio.post(box.session, "/twilio/voice", _form(),
                                      sign_url=box.twilio.public_url + "/twilio/status")
    assert status == 403


async def test_a_form_changed_after_signing_is_refused(box: Box) -> None:
    form = _form()
    headers = signed_post_headers(TOKEN, box.twilio.public_url + "/twilio/voice", form)
    async with box.session.post(box.twilio.box_url + "/twilio/voice", data=form | {"To": "+15550199"},
                                headers=headers) as response:
        assert response.status == 403


async def test_a_public_url_with_a_path_and_a_query_string() -> None:
    async for box in _box("https://edge.example.com:8443/switchboard"):
        form = _form()
        url = "https://edge.example.com:8443/switchboard/twilio/voice?attempt=2"
        headers = signed_post_headers(TOKEN, url, form)
        async with box.session.post(box.twilio.box_url + "/twilio/voice?attempt=2", data=form,
                                    headers=headers) as response:
            assert response.status == 200
            twiml = TwiML.parse(await response.text())
        assert twiml.stream_url == "wss://edge.example.com:8443/switchboard/twilio/media"


async def test_sip_mode_dials_the_boxs_sip_uri() -> None:
    async for box in _box("https://switchboard.example.com", mode="sip", sip_host="sip.example.com:5060"):
        _, twiml = await box.twilio.voice(box.session, CALLER, NUMBER)
        assert twiml.dial_sip == f"sip:{NUMBER}@sip.example.com:5060" and twiml.stream_url is None


async def test_a_box_not_taking_calls_rejects_busy(box: Box) -> None:
    box.accepting = False
    _, twiml = await box.twilio.voice(box.session, CALLER, NUMBER)
    assert twiml.rejected and twiml.stream_url is None


async def test_status_callbacks_are_signed_too(box: Box) -> None:
    call_sid = new_sid("CA")
    form = {"CallSid": call_sid, "CallStatus": "completed", "CallDuration": "31", "Caller": CALLER}
    assert (await box.twilio.post(box.session, "/twilio/status", form, signature=""))[0] == 403
    assert box.statuses == []
    assert (await box.twilio.post(box.session, "/twilio/status", form))[0] == 204
    assert box.statuses == [(call_sid, {"CallStatus": "completed", "CallDuration": "31"})]


@pytest.mark.parametrize("path", ["/twilio/voice", "/twilio/status"])
async def test_a_body_that_is_no_readable_form_gets_a_json_4xx_not_a_5xx(box: Box, path: str) -> None:
    # Found by the fuzzer (tests/console/test_openapi.py): aiohttp's form parser raised on a
    # multipart type without a boundary, and the webhook answered 503.
    signed = signed_post_headers(TOKEN, box.twilio.public_url + path, _form())
    url = box.twilio.box_url + path
    for content_type, body, status in [("multipart/form-data", b"CallSid=CA1", 415),
                                       ("application/json", b'{"CallSid": "CA1"}', 415),
                                       ("application/x-www-form-urlencoded", b"CallSid=\xff\xfe", 400),
                                       ("application/x-www-form-urlencoded; charset=no-such", b"CallSid=CA1", 400)]:
        async with box.session.post(url, data=body, headers=signed | {"Content-Type": content_type}) as response:
            assert response.status == status, content_type
            assert "error" in await response.json(), content_type
    assert box.statuses == []


async def _post(box: Box, form: dict[str, str], headers: dict[str, str]) -> TwiML:
    async with box.session.post(box.twilio.box_url + "/twilio/voice", data=form, headers=headers) as response:
        assert response.status == 200
        return TwiML.parse(await response.text())


async def test_a_replayed_voice_webhook_opens_no_second_stream(box: Box, caplog: pytest.LogCaptureFixture) -> None:
    # One signed request, captured, then sent again byte for byte: Twilio's signature has no date.
    form = _form()
    headers = signed_post_headers(TOKEN, box.twilio.public_url + "/twilio/voice", form)
    first = await _post(box, form, headers)
    # Twilio retrying (its answer lost) before the stream opened: the same ticket, nothing new.
    assert (await _post(box, form, headers)).parameters == first.parameters
    box.tickets.redeem(first.parameters["token"], form["CallSid"])  # the stream opened with it

    with caplog.at_level(logging.WARNING):
        replayed = await _post(box, form, headers)
    assert replayed.text == '<?xml version="1.0" encoding="UTF-8"?><Response><Hangup /></Response>'
    assert [(r.getMessage(), r.fields["call_sid"]) for r in caplog.records] == [  # type: ignore[attr-defined]
        ("Twilio voice webhook for a call that had its stream: hung up", form["CallSid"])]
    # Another call is answered as ever.
    _, other = await box.twilio.voice(box.session, CALLER, NUMBER)
    assert other.stream_url is not None and other.parameters["token"] != first.parameters["token"]
