"""The life of every call: offered by a SIP worker, answered into a room, run, recorded, closed.

Implements the participant server's CallHandler. Every path that ends a call goes through
`_end`, which closes the record exactly once, whatever raced (hang-up, flow, worker loss),
and hangs up a bridge transfer's outbound leg with it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.calls.admission import admit
from appliance.calls.bridge import LegState, NoRoute, OutboundLeg, dial_uri, pick_worker
from appliance.calls.egress import stream_to
from appliance.calls.escalation import CallHandle
from appliance.calls.runner import CallControl, CallServices, FlowRunner
from appliance.config import Config
from appliance.core.clock import iso_now, utcnow
from appliance.core.ids import new_call_id
from appliance.core.reasons import EndReason, outcome_label
from appliance.flow import engine as fe
from appliance.flow.engine import FlowEngine
from appliance.flow.library import FlowLibrary
from appliance.flow.loader import LoadedFlow
from appliance.observability import metrics
from appliance.observability.logging import log_extra
from appliance.operators.desk import Desk
from appliance.personas.dispatcher import PersonaDispatcher
from appliance.recording.converter import RecordingConverter
from appliance.recording.recorder import Recorder, recording_path
from appliance.rooms import protocol as p
from appliance.rooms.hub import Hub
from appliance.rooms.room import Room
from appliance.rooms.server import SipParticipant, WorkerConnection, WorkerRegistry
from appliance.speech.tts import EspeakTTS
from appliance.storage import Storage
from appliance.storage.db import StoredAudio

log = logging.getLogger(__name__)

# Who ended a bridged call, by the caller's end reason: stored with the transfer's end.
_ENDED_BY: dict[str, str] = {EndReason.CALLER_HANGUP: "caller", EndReason.WORKER_LOST: "worker"}


@dataclass
class Call:
    id: str
    room: Room
    leg: SipParticipant
    flow: LoadedFlow
    variables: dict[str, str] = field(default_factory=dict)
    recorder: Recorder | None = None
    runner: FlowRunner | None = None
    bridge: OutboundLeg | None = None  # a bridge transfer's destination, ringing or answered
    started: float = field(default_factory=time.monotonic)  # for the wallboard's durations
    # Set while `bridge` is a queue's desk phone the desk rang: told whether it answered.
    member_answered: Callable[[bool], None] | None = None


class CallManager:
    def __init__(self, config: Config, hub: Hub, storage: Storage, flows: FlowLibrary, tts: EspeakTTS,
                 personas: PersonaDispatcher, workers: WorkerRegistry, desk: Desk, converter: RecordingConverter):
        self.config = config
        self.converter = converter  # finished recordings go to it, to be stored in the configured format
        self.desk = desk  # where escalated callers wait for operators
        self.hub = hub
        self.storage = storage
        self.flows = flows
        self.calls: dict[str, Call] = {}
        # Caller legs the hub hung up, by (worker, leg), until the worker's Ended brings their RTP counts.
        self._hung_up: dict[tuple[int, int], str] = {}
        self._egress: set[asyncio.Task[None]] = set()  # flows' audio streams, until their calls end
        # The hub's one registry of connected workers (the participant server keeps it): where
        # bridge transfers place their outbound legs.
        self.workers = workers
        self.services = CallServices(
            tts=tts, storage=storage, personas=personas, flows_dir=config.flows_dir,
            recording_dir=config.recordings_dir, transfers_allowed=config.transfers.allowed,
            persona_fallback=flows.persona_fallback, converter=converter,
        )

    def _call(self, worker: WorkerConnection, leg: int) -> Call | None:
        participant = worker.legs.get(leg)
        return self.calls.get(participant.call_id) if isinstance(participant, SipParticipant) else None

    @staticmethod
    def _is_destination(call: Call, worker: WorkerConnection, leg: int) -> bool:
        return call.bridge is not None and call.bridge.worker is worker and call.bridge.participant.leg == leg

    async def offer(self, worker: WorkerConnection, offer: p.Offer) -> p.OfferReply:
        decision = admit(self.config, offer.trunk, offer.source, offer.to_user, self.flows.numbers(),
                         twilio=worker.role == "twilio")
        loaded = self.flows.get(decision.flow) if decision.flow else None
        if decision.code == 200 and loaded is None:
            log.error("number routed to a flow that is not loaded", extra=log_extra(flow=decision.flow))
            decision = type(decision)(404, "Not Found")
        if decision.code != 200 or loaded is None:
            metrics.sip_responses.labels(str(decision.code)).inc()
            log.info("call refused",
                     extra=log_extra(code=decision.code, pii={"to": offer.to_user, "from": offer.from_uri}))
            return p.OfferReply(leg=offer.leg, code=decision.code, reason=decision.reason)
        call_id = new_call_id()
        self.storage.open_call(
            call_id,
            trunk=decision.trunk.name if decision.trunk else None,
            from_uri=offer.from_uri,
            to_uri=offer.to_uri,
            flow=loaded.flow.name,
            flow_version=loaded.version,
            worker=worker.name,
        )
        self.storage.add_event(call_id, "offered", {"sip_call_id": offer.sip_call_id, "source": offer.source})
        room = self.hub.create_room(call_id)
        leg = SipParticipant("caller", worker, offer.leg, call_id)
        room.join(leg)
        worker.legs[offer.leg] = leg
        variables = {
            "caller": _user(offer.from_uri),
            "called": offer.to_user,
            "call_id": call_id,
            "trunk": decision.trunk.name if decision.trunk else "",
        }
        self.calls[call_id] = Call(call_id, room, leg, loaded, variables)
        metrics.calls_active.set(len(self.calls))
        log.info("call accepted", extra=log_extra(call_id=call_id, flow=loaded.flow.name, worker=worker.name,
                                                  pii={"from": offer.from_uri, "to": offer.to_uri}))
        return p.OfferReply(leg=offer.leg, code=200, reason="OK", call_id=call_id)

    def answered(self, worker: WorkerConnection, message: p.Answered) -> None:
        call = self._call(worker, message.leg)
        if call is None:
            return
        metrics.sip_responses.labels("200").inc()
        path = recording_path(self.config.recordings_dir, call.id, utcnow())
        self.storage.update_call(call.id, answered_at=iso_now(), recording_path=str(path))
        self.storage.add_event(call.id, "answered", {"codec": message.codec})
        call.recorder = Recorder(call.room, caller=call.leg.identity, path=path)
        max_waits = {name: q.max_wait for name, q in self.flows.queues.items() if q.max_wait}
        engine = FlowEngine(call.flow.flow, variables=dict(call.variables), queue_max_wait=max_waits)
        control = CallControl(
            hangup=lambda reason: self._hangup(call, reason),
            transfer=lambda to: self._transfer(call, to),
            bridge=lambda to, timeout: self._bridge(call, to, timeout),
            send_dtmf=call.leg.send_dtmf,
            escalate=lambda queue: self._escalate(call, queue),
            pause_recording=lambda paused, by: self._pause_recording(call, paused, by),
            start_egress=lambda action: self._start_egress(call, action),
        )
        call.runner = FlowRunner(call.id, call.room, engine, self.services, control, caller=call.leg.identity)
        call.runner.start()
        log.info("call answered", extra=log_extra(call_id=call.id, codec=message.codec))

    def pause_recording(self, call_id: str, paused: bool, by: str) -> str | None:
        """An API request to pause or resume a live call's recording: why it cannot, or None.
        KeyError when no call `call_id` is live."""
        return self._pause_recording(self.calls[call_id], paused, by)

    def _pause_recording(self, call: Call, paused: bool, by: str) -> str | None:
        """PCI DSS: while paused the recording is silence and every digit stored of the call
        (keys, variables, transcripts, tool arguments) is masked; the call's timing is kept."""
        if call.recorder is None:
            return "the call is not answered yet"
        if call.recorder.paused == paused:
            return f"the recording is {'paused' if paused else 'running'} already"
        # The event says where in the file the silence begins or ends, for whoever audits it.
        position = call.recorder.pause(paused)
        if paused:
            self.storage.add_event(call.id, "recording_paused", {"by": by, "recording_s": position})
            self.storage.mask(call.id, True)  # before the first key of the card number can arrive
        else:
            self.storage.mask(call.id, False)
            self.storage.add_event(call.id, "recording_resumed", {"by": by, "recording_s": position})
        log.info("recording paused" if paused else "recording resumed", extra=log_extra(call_id=call.id, by=by))
        return None

    def _start_egress(self, call: Call, action: fe.StartEgress) -> None:
        recorder = call.recorder
        if recorder is None:
            return  # flows run once the call is answered, when the recorder exists
        task = asyncio.get_running_loop().create_task(
            stream_to(action.url, call.id, recorder.audio, action.track, action.format, self.storage),  # type: ignore[arg-type]
            name=f"egress-{call.id}")
        self._egress.add(task)
        task.add_done_callback(self._egress.discard)

    def dtmf(self, worker: WorkerConnection, message: p.Dtmf) -> None:
        call = self._call(worker, message.leg)
        if call is None or self._is_destination(call, worker, message.leg):
            return
        if call.bridge is not None and call.bridge.state is LegState.ANSWERED:
            # Bridged: the caller's keys are for the destination (its own menu, a PIN).
            call.bridge.participant.send_dtmf(message.digit)
        self.storage.add_event(call.id, "dtmf", {"digit": message.digit, "method": message.method})
        call.room.emit("dtmf", call.leg.identity, {"digit": message.digit})
        if call.runner:
            call.runner.dtmf(message.digit)

    def ended(self, worker: WorkerConnection, message: p.Ended) -> None:
        hung_up = self._hung_up.pop((id(worker), message.leg), None)
        call = self._call(worker, message.leg)
        call_id = call.id if call is not None else hung_up
        if message.rtp is not None and call_id is not None:
            leg = "destination" if call is not None and self._is_destination(call, worker, message.leg) else "caller"
            self._rtp(call_id, leg, message.rtp)
        if call is not None and self._is_destination(call, worker, message.leg):
            self._destination_gone(call, "destination", message.reason)
            return
        worker.legs.pop(message.leg, None)
        if call is not None:
            self._end(call, message.reason)

    def _rtp(self, call_id: str, leg: str, rtp: p.Rtp) -> None:
        """A leg's RTP counts go with the call's events (after `ended` when the hub hung up): what
        the recording's caller side is measured against, and the call's quality."""
        self.storage.add_event(call_id, "rtp", {"leg": leg, **rtp.model_dump()})
        for kind in ("received", "lost", "discarded", "sent"):
            metrics.rtp_packets.labels(kind).inc(getattr(rtp, kind))
        metrics.rtp_jitter.observe(rtp.jitter_max_ms / 1000)

    def worker_lost(self, worker: WorkerConnection) -> None:
        for leg in list(worker.legs):
            call = self._call(worker, leg)
            if call is None:
                continue
            if self._is_destination(call, worker, leg):
                self._destination_gone(call, "worker", EndReason.WORKER_LOST)
            else:
                self._end(call, EndReason.WORKER_LOST)
        worker.legs.clear()
        for key in [k for k in self._hung_up if k[0] == id(worker)]:
            del self._hung_up[key]

    def dial_result(self, worker: WorkerConnection, message: p.DialResult) -> None:
        call = self._call(worker, message.leg)
        if call is not None and self._is_destination(call, worker, message.leg):
            call.bridge.result(message)  # type: ignore[union-attr]  # _is_destination: there is one

    def transfer_result(self, worker: WorkerConnection, message: p.TransferResult) -> None:
        call = self._call(worker, message.leg)
        if call is None:
            return
        self.storage.add_event(call.id, "transfer_result", {"ok": message.ok, "code": message.code})
        if call.runner:
            call.runner.transfer_done(message.ok, None if message.ok else f"{message.code} {message.reason}".strip())

    def handle(self, call_id: str) -> CallHandle | None:
        """A live, answered call as the operator desk acts on it (escalated, or joined by a supervisor)."""
        call = self.calls.get(call_id)
        if call is None or call.runner is None:
            return None
        return CallHandle(call.id, call.room, call.runner, lambda reason: self._hangup(call, reason),
                          ring=lambda uri, timeout, done: self._ring_member(call, uri, timeout, done),
                          stop_ringing=lambda: self._stop_member(call))

    def _escalate(self, call: Call, queue: str) -> None:
        handle = self.handle(call.id)
        assert handle is not None  # the call's runner asked
        self.desk.enqueue(handle, queue)

    def _ring_member(self, call: Call, uri: str, timeout: float, done: Callable[[bool], None]) -> None:
        """Dial a queue's desk phone (the ACD offered it the call) with the bridge-transfer machinery."""
        if call.bridge is not None:
            done(False)
            return
        try:
            worker = pick_worker(call.leg.worker, self.workers.sip.values())
        except NoRoute as exc:
            log.warning("desk phone cannot be dialled", extra=log_extra(call_id=call.id, error=str(exc)))
            asyncio.get_running_loop().call_soon(done, False)
            return

        def result(message: p.DialResult) -> None:
            if not message.ok:
                call.bridge = call.member_answered = None
            done(message.ok)

        call.member_answered = done
        caller_id = _caller_id(self.config.transfers.caller_id, call.variables)
        # The ACD times the ring; the leg's own timeout is only a backstop.
        call.bridge = OutboundLeg(call.id, call.room, worker, uri, timeout + 5, on_result=result,
                                  caller_id=caller_id)

    def _stop_member(self, call: Call) -> None:
        if call.bridge is not None and call.member_answered is not None:
            call.bridge.close(EndReason.RING_TIMEOUT)
            call.bridge = call.member_answered = None

    def _transfer(self, call: Call, to: str) -> None:
        # Twilio places the call a Media Streams caller is sent to: a number goes to it as a number
        # (tel:), never to transfers.outbound_proxy, which is the SIP workers' carrier.
        proxy = None if call.leg.worker.role == "twilio" else self.config.transfers.outbound_proxy
        call.leg.transfer(_refer_target(to, proxy), _caller_id(self.config.transfers.caller_id, call.variables))

    def _bridge(self, call: Call, to: str, timeout: float) -> None:
        """A bridge transfer: dial `to` (allowed: the runner checked) from a SIP worker.

        The answer, or not, goes back to the runner.
        """
        try:
            uri = dial_uri(to, self.config.transfers.outbound_proxy)
            worker = pick_worker(call.leg.worker, self.workers.sip.values())
        except NoRoute as exc:
            log.warning("transfer cannot be dialled", extra=log_extra(call_id=call.id, error=str(exc)))
            self._bridge_failed(call, 0, str(exc))
            return
        caller_id = _caller_id(self.config.transfers.caller_id, call.variables)
        call.bridge = OutboundLeg(call.id, call.room, worker, uri, timeout,
                                  on_result=lambda message: self._dial_done(call, message), caller_id=caller_id)
        self.storage.add_event(call.id, "transfer_dialling", {"uri": uri, "worker": worker.name,
                                                              "timeout_s": timeout})

    def _dial_done(self, call: Call, message: p.DialResult) -> None:
        if not message.ok:
            call.bridge = None
            self._bridge_failed(call, message.code, message.reason)
            return
        assert call.bridge is not None
        self.storage.add_event(call.id, "transfer_answered", {"code": message.code, "codec": message.codec,
                                                              "worker": call.bridge.worker.name})
        if call.runner:
            call.runner.transfer_done(True, None)

    def _bridge_failed(self, call: Call, code: int, reason: str) -> None:
        """Busy, declined, no answer, not allowed, no route: the flow takes the step's on_error."""
        self.storage.add_event(call.id, "transfer_result", {"ok": False, "code": code, "reason": reason})
        if call.runner:
            # Soon, not now: the runner may still be inside the action that asked for the transfer.
            error = f"{code} {reason}".strip() if code else reason
            asyncio.get_running_loop().call_soon(call.runner.transfer_done, False, error)

    def _destination_gone(self, call: Call, by: str, reason: str) -> None:
        """The bridged (or ringing) destination's leg ended: the caller's call ends with it."""
        bridge = call.bridge
        assert bridge is not None
        answered = bridge.state is LegState.ANSWERED
        bridge.ended()
        call.bridge = None
        member, call.member_answered = call.member_answered, None
        if member is not None:
            # A desk phone: unanswered, the desk offers the call elsewhere; answered, it hung up.
            if answered:
                self._hangup(call, EndReason.OPERATOR_HANGUP)
            else:
                member(False)
            return
        if not answered:
            self._bridge_failed(call, 0, reason)
            return
        self.storage.add_event(call.id, "transfer_ended", {"by": by, "reason": reason})
        # A destination that hung up is a transfer that ran its course; a lost worker is a fault.
        self._hangup(call, EndReason.TRANSFERRED if by == "destination" else reason)

    def _hangup(self, call: Call, reason: str) -> None:
        call.leg.hangup(reason)
        if call.leg.worker.legs.pop(call.leg.leg, None) is not None and call.leg.worker.role == "sip":
            self._hung_up[(id(call.leg.worker), call.leg.leg)] = call.id
        self._end(call, reason)

    def _end(self, call: Call, reason: str) -> None:
        if self.calls.pop(call.id, None) is None:
            return
        if call.bridge is not None and call.member_answered is not None:
            # A queue's desk phone: the desk records its part (operator_left), nothing to transfer.
            call.bridge.close(reason)
            call.bridge = call.member_answered = None
        if call.bridge is not None:
            # The caller's side is over: the destination must not stay up (or keep ringing) alone.
            bridge, call.bridge = call.bridge, None
            bridge.close(reason)
            if bridge.answered:
                by = _ENDED_BY.get(reason, "appliance")
                self.storage.add_event(call.id, "transfer_ended", {"by": by, "reason": reason})
                if by == "caller":
                    reason = EndReason.TRANSFERRED  # the call's outcome; who hung up is in transfer_ended
            else:
                self.storage.add_event(call.id, "transfer_cancelled", {"reason": reason})
        self.desk.call_ended(call.id)  # before the room closes: the operator leaves it first
        if call.runner:
            call.runner.stop()
        duration = call.recorder.stop() if call.recorder else 0.0
        self.hub.close_room(call.id)
        self.storage.mask(call.id, False)
        self.storage.close_call(call.id, reason)
        converting = call.recorder is not None and self.converter.converting
        self.storage.add_event(call.id, "ended", {"reason": reason, "recorded_s": round(duration, 2)}
                               | ({"converting": True} if converting else {}))
        if call.recorder is not None:
            self.converter.submit(StoredAudio(call.id, "call", str(call.recorder.path), None, iso_now()))
        metrics.calls_active.set(len(self.calls))
        metrics.calls_total.labels(outcome_label(reason)).inc()  # reasons come from workers and flows
        log.info("call ended", extra=log_extra(call_id=call.id, reason=reason, recorded_s=round(duration, 2)))

    def shutdown(self, reason: str = EndReason.APPLIANCE_STOP) -> None:
        for call in list(self.calls.values()):
            self._hangup(call, reason)



_URI_USER = re.compile(r"sips?:([^@;>]+)@")


def _user(uri: str) -> str:
    match = _URI_USER.search(uri)
    return match.group(1) if match else ""


def _caller_id(setting: str, variables: dict[str, str]) -> str | None:
    """The From user for an outbound leg; None (the box's own identity) when there is none fit to send."""
    user = {"called": variables.get("called", ""), "caller": variables.get("caller", "")}.get(setting, setting)
    return user if re.fullmatch(p.SIP_USER, user) else None


def _refer_target(to: str, outbound_proxy: str | None) -> str:
    """A URI for REFER. A number goes to the configured carrier host, else as a tel: URI for the
    trunk to route; never to a host the caller named in its From (that is the caller's choice)."""
    if to.startswith(("sip:", "sips:", "tel:")):
        return to
    return dial_uri(to, outbound_proxy) if outbound_proxy else f"tel:{to}"
