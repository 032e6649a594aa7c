"""A bridge transfer's outbound leg: dialled from a SIP worker, rung against a timeout, and
joined to the caller's room on answer, where the room's mix carries caller ↔ destination.

The leg meets the caller in the hub, not in pjsua2, so it may live on any worker. Whoever
ends the call (caller, destination, flow, worker loss, shutdown) closes the leg here, so
no outbound call outlives its caller.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from enum import Enum

from appliance.core.reasons import EndReason
from appliance.observability.logging import log_extra
from appliance.rooms import protocol as p
from appliance.rooms.room import Room
from appliance.rooms.server import SipParticipant, WorkerConnection

log = logging.getLogger(__name__)

DESTINATION = "destination"  # the outbound leg's identity in the room
_NUMBER = re.compile(r"^\+?[0-9*#]+$")


class NoRoute(Exception):
    """The destination cannot be dialled: a number without transfers.outbound_proxy, or no worker has room."""


def dial_uri(to: str, outbound_proxy: str | None) -> str:
    """The Request-URI for `to`: SIP URIs as written; numbers at the carrier's termination host."""
    if to.startswith(("sip:", "sips:")):
        return to
    if not _NUMBER.match(to):
        raise NoRoute(f"{to} is neither a SIP URI nor a number")
    if not outbound_proxy:
        raise NoRoute("numbers need an outbound route (transfers.outbound_proxy in appliance.yaml)")
    scheme, host = outbound_proxy.split(":", 1)
    return f"{scheme}:{to}@{host}"


def pick_worker(preferred: WorkerConnection, workers: Iterable[WorkerConnection]) -> WorkerConnection:
    """The caller's own worker when it is a SIP worker with room (one process, no extra hop), else the
    emptiest SIP worker (a caller on Twilio Media Streams is bridged through one)."""
    if preferred.role == "sip" and preferred.room_for_calls > 0 and not preferred.writer.is_closing():
        return preferred
    candidates = [w for w in workers if w.room_for_calls > 0 and not w.writer.is_closing()]
    if not candidates:
        raise NoRoute("no SIP worker has room for another call")
    return max(candidates, key=lambda w: w.room_for_calls)


class LegState(Enum):
    """Where an outbound leg is: ringing → answered → over, or ringing → over."""

    RINGING = "ringing"
    ANSWERED = "answered"
    OVER = "over"


class OutboundLeg:
    """One call's dialled destination, from the dial until its leg is gone (`LegState`)."""

    def __init__(self, call_id: str, room: Room, worker: WorkerConnection, uri: str, timeout: float,
                 on_result: Callable[[p.DialResult], None], caller_id: str | None = None):
        self.call_id = call_id
        self.room = room
        self.uri = uri
        self.state = LegState.RINGING
        self.answered = False  # stays True once answered, after the leg is over too
        self.participant = SipParticipant(DESTINATION, worker, worker.next_dialled_leg(), call_id)
        self._on_result = on_result
        worker.legs[self.participant.leg] = self.participant
        self.participant.dial(uri, caller_id)
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            timeout, self._ring_timeout, timeout)
        log.info("transfer dialling", extra=log_extra(call_id=call_id, worker=worker.name, leg=self.participant.leg,
                                                      timeout_s=timeout, pii={"to": uri}))

    @property
    def worker(self) -> WorkerConnection:
        return self.participant.worker

    def result(self, message: p.DialResult) -> None:
        """The worker's answer to the dial; after a ring timeout or a cancel it comes too late to count."""
        if self.state is not LegState.RINGING:
            return
        self._cancel_timer()
        if message.ok:
            self.state = LegState.ANSWERED
            self.answered = True
            # In the room from now on: the caller hears the destination and the destination the caller.
            self.room.join(self.participant)
            log.info("transfer answered", extra=log_extra(call_id=self.call_id, codec=message.codec))
        else:
            self._forget()
            log.info("transfer failed", extra=log_extra(call_id=self.call_id, code=message.code, reason=message.reason))
        self._on_result(message)

    def ended(self) -> None:
        """The destination's leg is gone (it hung up, or its worker did)."""
        self._cancel_timer()
        self._forget()

    def close(self, reason: str) -> None:
        """Hang the destination up (or stop it ringing), whatever state it is in."""
        if self.state is LegState.OVER:
            return
        self._cancel_timer()
        self.participant.hangup(reason)
        self._forget()

    def _ring_timeout(self, timeout: float) -> None:
        self._timer = None
        if self.state is not LegState.RINGING:
            return
        self.participant.hangup(EndReason.RING_TIMEOUT)  # a CANCEL on the wire
        self._forget()
        self._on_result(p.DialResult(leg=self.participant.leg, ok=False, code=408,
                                     reason=f"no answer in {timeout:g} s"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _forget(self) -> None:
        self.state = LegState.OVER
        legs = self.participant.worker.legs
        if legs.get(self.participant.leg) is self.participant:
            del legs[self.participant.leg]
        if self.participant.room is not None:
            self.room.leave(self.participant.identity)
