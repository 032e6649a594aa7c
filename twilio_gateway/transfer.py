"""A blind transfer of a Media Streams caller, as the TwiML Twilio is given for the live call.

A SIP REFER cannot move a Twilio call: Twilio holds the caller's leg, so the call is redirected
(REST `calls(sid).update(twiml=...)`) to `<Dial>` the destination, and leaves the box. Only the
hub's Transfer names the destination (a flow's or an operator's, checked against
transfers.allowed); nothing from the stream or a webhook reaches this module.
"""

from __future__ import annotations

import re

from twilio.twiml.voice_response import VoiceResponse

__all__ = ["NotDialable", "dial_twiml"]

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
# Twilio's <Dial callerId> takes a phone number (one of the account's, or the caller's own).
CALLER_ID = re.compile(r"^\+?[0-9]{3,15}$")
MAX_SIP_URI = 255  # Twilio's <Sip> limit


class NotDialable(ValueError):
    """A destination Twilio's <Dial> cannot take: the transfer fails with this reason."""


def dial_twiml(to: str, caller_id: str | None) -> str:
    """TwiML dialling `to`: `tel:+E164` (the hub's form of a number) as <Number>, a sip: URI as <Sip>.

    `caller_id` is shown to the destination when it is a number; otherwise Twilio's default (the
    caller's number on an inbound call) stands.
    """
    response = VoiceResponse()
    dial = response.dial(caller_id=caller_id) if caller_id and CALLER_ID.fullmatch(caller_id) else response.dial()
    if to.startswith("tel:"):
        if not E164.fullmatch(to[4:]):
            raise NotDialable(f"{to[4:]} is not an E.164 number (+ and up to 15 digits)")
        dial.number(to[4:])
    elif to.startswith("sip:") and len(to) <= MAX_SIP_URI:
        dial.sip(to)
    else:
        raise NotDialable("Twilio dials numbers (E.164) and sip: URIs of up to 255 characters")
    return str(response)
