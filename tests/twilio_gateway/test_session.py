"""The Media Streams protocol as a state machine: Twilio's messages and the hub's in, exact actions out."""

from __future__ import annotations

import base64
import json

import pytest

import appliance.rooms.protocol as p
from appliance.core.audio import FRAME_BYTES
from twilio_gateway import messages as m
from twilio_gateway import session as s
from twilio_gateway.tickets import StreamTickets

CALL = "CA" + "c" * 32
STREAM = "MZ" + "d" * 32
CALLER, CALLED = "+15557654321", "+15550100"
LEG = 7


def twilio(event: str, **body: object) -> s.Received:
    """One message as Twilio writes it, through the same decoder the socket uses."""
    return s.Received(m.decode(json.dumps({"event": event, "streamSid": STREAM, "sequenceNumber": "1"} | body)))


def start(token: str, call_sid: str = CALL, encoding: str = "audio/x-mulaw") -> s.Received:
    return twilio("start", start={"accountSid": "AC" + "a" * 32, "streamSid": STREAM, "callSid": call_sid,
                                  "tracks": ["inbound"], "customParameters": {"token": token},
                                  "mediaFormat": {"encoding": encoding, "sampleRate": 8000, "channels": 1}})


def media(payload: bytes = b"\xff" * 160) -> s.Received:
    return twilio("media", media={"track": "inbound", "chunk": "1", "timestamp": "20",
                                  "payload": base64.b64encode(payload).decode()})


@pytest.fixture
def tickets() -> StreamTickets:
    return StreamTickets(30, clock=lambda: 0.0)


def offered(tickets: StreamTickets) -> s.StreamSession:
    session = s.StreamSession(LEG, tickets)
    assert session.handle(s.Received(m.decode('{"event": "connected", "protocol": "Call", "version": "1.0.0"}'))) == []
    assert session.handle(start(tickets.issue(CALL, CALLER, CALLED))) == [s.ToHub(p.Offer(
        leg=LEG, sip_call_id=CALL, from_uri=f"sip:{CALLER}@twilio", to_uri=f"sip:{CALLED}@twilio", to_user=CALLED))]
    return session


def answered(tickets: StreamTickets) -> s.StreamSession:
    session = offered(tickets)
    assert session.handle(s.HubReply(p.OfferReply(leg=LEG, code=200, call_id="CA1"))) == [
        s.ToHub(p.Answered(leg=LEG, codec="PCMU/8000"))]
    return session


def test_a_call_from_start_to_the_callers_stop(tickets: StreamTickets) -> None:
    session = answered(tickets)
    (audio,) = session.handle(media())
    assert isinstance(audio, s.CallerAudio) and [len(f) for f in audio.frames] == [FRAME_BYTES]
    assert session.handle(twilio("dtmf", dtmf={"track": "inbound_track", "digit": "5"})) == [
        s.ToHub(p.Dtmf(leg=LEG, digit="5", method="twilio"))]
    assert session.handle(twilio("stop", stop={"accountSid": "AC", "callSid": CALL})) == [
        s.ToHub(p.Ended(leg=LEG, reason="caller-hangup")), s.Close(1000, "")]
    assert session.handle(media()) == []  # media after stop
    assert session.phase is s.Phase.ENDED


def test_the_hubs_audio_goes_out_with_a_mark_every_ten_frames_and_a_clear_overtakes_it(
        tickets: StreamTickets) -> None:
    session = answered(tickets)
    sent = [session.handle(s.HubFrame(bytes(FRAME_BYTES))) for _ in range(10)]
    assert [len(actions) for actions in sent] == [1] * 9 + [2]
    first = json.loads(sent[0][0].text)  # type: ignore[union-attr]
    assert first == {"event": "media", "streamSid": STREAM, "media": {"payload": base64.b64encode(b"\xff" * 160)
                                                                      .decode()}}
    assert sent[9][1] == s.ToTwilio(json.dumps({"event": "mark", "streamSid": STREAM, "mark": {"name": "10"}},
                                             separators=(",", ":")))
    assert session.handle(s.HubClear()) == [s.DropUnsent(), s.ToTwilio(f'{{"event":"clear","streamSid":"{STREAM}"}}')]


def test_the_hubs_hangup_ends_the_call_at_twilio_and_tells_the_hub_nothing_more(tickets: StreamTickets) -> None:
    session = answered(tickets)
    assert session.handle(s.HubHangup("flow-hangup")) == [s.EndAtTwilio(CALL), s.Close(1000, "")]
    assert session.handle(twilio("stop")) == []
    assert session.reason == "flow-hangup"


def test_nothing_but_connected_or_start_may_come_first(tickets: StreamTickets) -> None:
    session = s.StreamSession(LEG, tickets)
    assert session.handle(media()) == [s.Close(1008, "media before start")]


def test_a_start_without_a_ticket_for_its_call_reaches_no_hub(tickets: StreamTickets) -> None:
    token = tickets.issue(CALL, CALLER, CALLED)
    assert s.StreamSession(LEG, tickets).handle(start(token, call_sid="CA" + "e" * 32)) == [
        s.Close(1008, "stream token was issued for another call")]
    assert s.StreamSession(LEG, tickets).handle(start("guess")) == [s.Close(1008, (
        "stream token not issued by a signed voice webhook, used already, or expired"))]
    assert s.StreamSession(LEG, tickets).handle(start(token, encoding="audio/x-alaw")) == [
        s.Close(1003, "media format audio/x-alaw at 8000 Hz; only μ-law 8 kHz mono")]


def test_a_hub_answer_after_the_stream_gave_up_closes_the_call_it_opened(tickets: StreamTickets) -> None:
    session = offered(tickets)
    assert session.handle(s.TimedOut(s.Phase.STARTING)) == []  # a timer from a phase already left
    assert session.handle(s.TimedOut(s.Phase.OFFERED)) == [s.Close(1013, "the hub did not answer")]
    assert session.handle(s.HubReply(p.OfferReply(leg=LEG, code=200, call_id="CA1"))) == [
        s.ToHub(p.Ended(leg=LEG, reason="stream-lost"))]


def test_a_refused_call_closes_the_stream_without_an_end_for_the_hub(tickets: StreamTickets) -> None:
    session = offered(tickets)
    assert session.handle(s.HubReply(p.OfferReply(leg=LEG, code=404, reason="Not Found"))) == [
        s.Close(1000, "the hub refused the call: 404 Not Found")]
    assert session.reason == "refused-404"


def test_a_broken_frame_ends_the_call(tickets: StreamTickets) -> None:
    session = answered(tickets)
    assert session.handle(s.Broken(1003, "binary frame")) == [s.ToHub(p.Ended(leg=LEG, reason="stream-lost")),
                                                             s.Close(1003, "binary frame")]


def test_marks_tell_the_hub_how_far_behind_the_callers_ear_is(tickets: StreamTickets) -> None:
    session = answered(tickets)
    for _ in range(20):
        session.handle(s.HubFrame(bytes(FRAME_BYTES)))
    assert session.handle(twilio("mark", mark={"name": "10"})) == [s.ToHub(p.Playout(leg=LEG, behind_ms=200))]
    assert session.handle(twilio("mark", mark={"name": "10"})) == []  # no news
    assert session.handle(twilio("mark", mark={"name": "20"})) == [s.ToHub(p.Playout(leg=LEG, behind_ms=0))]
    assert session.handle(twilio("mark", mark={"name": "not ours"})) == []


def test_a_client_whose_marks_stop_coming_back_is_cut_off(tickets: StreamTickets) -> None:
    session = answered(tickets)
    for _ in range(s.MAX_UNHEARD_FRAMES):
        session.handle(s.HubFrame(bytes(FRAME_BYTES)))
    session.handle(twilio("mark", mark={"name": "100"}))  # it played the first 2 s
    for _ in range(100):
        assert not any(isinstance(a, s.Close) for a in session.handle(s.HubFrame(bytes(FRAME_BYTES))))
    assert session.handle(s.HubFrame(bytes(FRAME_BYTES))) == [
        s.ToHub(p.Ended(leg=LEG, reason="stream-lost")),
        s.Close(1008, "client stopped reading: 5020 ms sent and not played")]


# --- blind transfer: the hub's Transfer redirects the call at Twilio to <Dial> the destination
DIAL_NUMBER = ('<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+15550100">'
               '<Number>+15550199</Number></Dial></Response>')


def test_a_transfer_redirects_the_call_and_its_hangup_leaves_twilios_call_alone(tickets: StreamTickets) -> None:
    session = answered(tickets)
    assert session.handle(s.HubTransfer("tel:+15550199", CALLED)) == [s.RedirectAtTwilio(CALL, DIAL_NUMBER)]
    assert session.handle(s.HubTransfer("tel:+15550199", CALLED)) == [s.ToHub(p.TransferResult(
        leg=LEG, ok=False, code=491, reason="no answered call, or a transfer already under way"))]
    assert session.handle(s.Redirected(True, 200, "redirected")) == [
        s.ToHub(p.TransferResult(leg=LEG, ok=True, code=200, reason="redirected"))]
    # The flow ends as transferred: the call is Twilio's, dialling; ending it there would cut it.
    assert session.handle(s.HubHangup("transferred")) == [s.Close(1000, "")]
    assert session.reason == "transferred"


def test_twilios_stop_after_the_redirect_ends_the_call_as_transferred(tickets: StreamTickets) -> None:
    session = answered(tickets)
    session.handle(s.HubTransfer("sip:desk@pbx.example.com", None))
    session.handle(s.Redirected(True, 200, "redirected"))
    assert session.handle(twilio("stop")) == [s.ToHub(p.Ended(leg=LEG, reason="transferred")), s.Close(1000, "")]


@pytest.mark.parametrize("ok", [True, False])
def test_a_stop_before_twilios_api_answers_is_told_with_the_outcome(tickets: StreamTickets, ok: bool) -> None:
    # Twilio may stop the stream it redirects before its API has answered; or the caller hung up.
    session = answered(tickets)
    assert session.handle(s.HubTransfer("sip:desk@pbx.example.com", None)) == [s.RedirectAtTwilio(
        CALL, '<?xml version="1.0" encoding="UTF-8"?><Response><Dial><Sip>sip:desk@pbx.example.com</Sip>'
              '</Dial></Response>')]
    assert session.handle(twilio("stop")) == [s.Close(1000, "")]
    reason = "transferred" if ok else "caller-hangup"
    assert session.handle(s.Redirected(ok, 200 if ok else 400, "answer")) == [
        s.ToHub(p.TransferResult(leg=LEG, ok=ok, code=200 if ok else 400, reason="answer")),
        s.ToHub(p.Ended(leg=LEG, reason=reason))]
    assert session.reason == reason


def test_a_refused_redirect_leaves_the_call_with_us(tickets: StreamTickets) -> None:
    session = answered(tickets)
    session.handle(s.HubTransfer("tel:+15550199", None))
    assert session.handle(s.Redirected(False, 400, "Twilio error 21220: call not in progress")) == [
        s.ToHub(p.TransferResult(leg=LEG, ok=False, code=400, reason="Twilio error 21220: call not in progress"))]
    # The flow's on_error goes on; its hang-up ends the phone call at Twilio as ever.
    assert session.handle(s.HubHangup("flow-hangup")) == [s.EndAtTwilio(CALL), s.Close(1000, "")]


@pytest.mark.parametrize(("to", "why"), [
    ("tel:5550199", "5550199 is not an E.164 number (+ and up to 15 digits)"),
    ("sips:desk@pbx.example.com", "Twilio dials numbers (E.164) and sip: URIs of up to 255 characters"),
    ("sip:" + "d" * 252, "Twilio dials numbers (E.164) and sip: URIs of up to 255 characters"),
])
def test_a_destination_twilio_cannot_dial_fails_the_transfer_without_asking_twilio(
        tickets: StreamTickets, to: str, why: str) -> None:
    session = answered(tickets)
    assert session.handle(s.HubTransfer(to, None)) == [s.ToHub(p.TransferResult(leg=LEG, ok=False, code=416,
                                                                                reason=why))]
    assert session.transferring is s.Transferring.NONE


def test_a_caller_id_that_is_no_number_is_left_to_twilio(tickets: StreamTickets) -> None:
    session = answered(tickets)
    (redirect,) = session.handle(s.HubTransfer("tel:+15550199", "anonymous"))
    assert redirect == s.RedirectAtTwilio(CALL, DIAL_NUMBER.replace(' callerId="+15550100"', ""))
