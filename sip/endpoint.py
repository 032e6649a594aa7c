"""The pjsua2 endpoint of one worker, on the one thread that may touch pjsua2.

Everything pjsua2 happens on `PjThread`: it owns the Endpoint, the account and every Call,
and runs `libHandleEvents` in a loop, ticking the conference bridge between its rounds
(sip/bridge_clock.py: pjmedia's own clock thread sent RTP while calls were torn down).
Other threads hand it work through `submit`, which also wakes it at once (a CRLF keep-alive
to our own SIP port ends the poll early), and it reports call events (sip/events.py) through
`on_event`, which the worker bridges to asyncio.
Its pjsua2 Call and Account subclasses, which turn pjsua2's callbacks into calls on it, are
in sip/calls.py.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pjsua2 as pj

from appliance.core.audio import FRAME_MS, SAMPLE_RATE
from appliance.core.processes import set_process_name
from appliance.core.reasons import EndReason, refused
from appliance.observability.logging import log_extra
from sip.bridge_clock import BridgeClock
from sip.calls import DialAccount, WorkerAccount, WorkerCall
from sip.credentials import DialAuth
from sip.edge_config import EDGE_KEY_HEADER, outbound_hosts
from sip.events import CallOffered, DialFailed, EventSink, LegAnswered, LegEnded, PjEvent, RtpCounts, TransferFinished
from sip.media import CallMediaPort, audio_format
from sip.rtp_ports import PortBlock

log = logging.getLogger(__name__)

# G.722 first: wideband when the trunk offers it; PCMU/PCMA for everyone else; speex
# never by default (peers that offer it rarely mean it and it costs CPU).
CODEC_PRIORITIES = {"G722/16000": 255, "PCMU/8000": 254, "PCMA/8000": 253}
# pjmedia's quality setting picks the conference bridge's resampler: 8 (pjsua's default) a long
# filter, 3-4 the short one. Narrowband calls are upsampled 8 → 16 kHz and back on every frame,
# and speech band-limited to 3.4 kHz loses nothing with the short filter, while the workers'
# media clock spends about 40 % less (bench/calls.py's baseline: 0.50 → 0.29 % of a core per call).
MEDIA_QUALITY = 4

_REQUEST_USER = re.compile(r"^INVITE\s+(?:sips?|tel):([^@;>\s]+)", re.IGNORECASE)
_HEADER = "^{name}:[ \t]*([^\r\n]+)"
_END_OF_HEADERS = re.compile(r"\r?\n\r?\n")


def header(message: str, name: str) -> str | None:
    """The first `name` header of a SIP message, looked for in the header section only.

    The body is the sender's: an SDP line reading "X-Switchboard-Source: ..." is not a header,
    and searching the whole message would read it as one wherever the real header is missing.
    """
    headers = _END_OF_HEADERS.split(message, maxsplit=1)[0]
    match = re.search(_HEADER.format(name=re.escape(name)), headers, re.IGNORECASE | re.MULTILINE)
    return match.group(1).strip() if match else None


def _address(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """("host:port" or "[v6]:port") → (address, port); a bad one raises ValueError."""
    host, _, port = text.rpartition(":")
    return ipaddress.ip_address(host.strip("[]")), int(port)


PORT_WAIT_S = 10.0


def _wait_for_port(port: int, worker: str) -> None:
    """Wait (up to PORT_WAIT_S) until nothing holds our SIP port on 127.0.0.1.

    After a `kill -9` of the appliance, its workers get SIGTERM and take a second or two to hang up
    their calls; an appliance started at once forks its workers sooner than that, and a pjsua2
    transport that cannot bind leaves the worker without a SIP port. A timeout leaves the bind
    to fail, loudly, in transportCreate.
    """
    deadline = time.monotonic() + PORT_WAIT_S
    waited = False
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    return
            else:
                if waited:
                    log.info("SIP port free again", extra=log_extra(worker=worker, port=port))
                return
        if not waited:
            log.warning("SIP port still held (a worker before this one?); waiting", extra=log_extra(
                worker=worker, port=port, wait_s=PORT_WAIT_S))
            waited = True
        time.sleep(0.05)


_PJ_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}
# pjsua logs a media port it cannot bind at level 1 and then simply tries the block's next pair
# (pjsua_media.c, create_rtp_rtcp_sock: up to 100 pairs); only "Unable to find appropriate RTP/RTCP
# ports combination" after that means the call has no media. A busy pair is a socket of another
# process in our block, or one of this worker's own long calls that the round-robin cursor came
# back to: worth a warning (a deployment should reserve the block), never an error line.
_PAIR_BUSY = re.compile(r"^(?P<socket>RTC?P) socket bind\(\) at (?P<address>\S+) error: (?P<error>.*)$")


class PjLogWriter(pj.LogWriter):
    """pjsua's own log lines, into our structured log (it would print its own format otherwise)."""

    def __init__(self, worker: str):
        super().__init__()
        self.worker = worker
        self.log = logging.getLogger("sip.pjsua")

    def write(self, entry: pj.LogEntry) -> None:
        message = entry.msg.strip()
        if not message:
            return
        busy = _PAIR_BUSY.match(message)
        if busy:
            self.log.warning("media port busy; pjsua tries the next pair of the block", extra=log_extra(
                worker=self.worker, socket=busy["socket"], address=busy["address"], error=busy["error"]))
            return
        level = _PJ_LEVELS.get(entry.level, logging.DEBUG)
        self.log.log(level, message, extra={"fields": {"worker": self.worker}})


@dataclass
class EndpointSettings:
    name: str
    sip_port: int
    rtp_port: int
    rtp_ports: int
    max_calls: int
    poll_ms: int
    # The SIP edge as host:port, the only sender whose INVITEs are offered to the hub. A
    # wildcard host (0.0.0.0, ::) means the edge's port on any of this box's addresses.
    edge: str
    # The edge's X-Switchboard-Edge value (sip.edge_config.EDGE_KEY_HEADER): without it, an INVITE
    # from the edge's address may come from another local user who bound the same port.
    edge_key: str = ""
    media_address: str | None = None
    retry_after_s: int = 5
    outbound_proxy: str | None = None  # the edge, e.g. sip:127.0.0.1:5060;lr: calls we place leave through it
    dial_auth: DialAuth | None = None  # answers the carrier termination's challenges, on calls to its host only


@dataclass
class Leg:
    """One call on this worker, as the rest of the worker sees it."""

    id: int
    call: WorkerCall
    port: CallMediaPort | None = None
    answered: bool = False
    outbound: bool = False  # placed by us (a bridge transfer), not offered by a caller
    info: dict[str, Any] = field(default_factory=dict)
    rtp: RtpCounts | None = None  # the counts of its streams destroyed so far


def _connect(media: pj.AudioMedia, port: CallMediaPort) -> None:
    """A call's audio into our media port, and the port's out to the call."""
    media.startTransmit(port)
    port.startTransmit(media)


# The OS name of the pjsua2 thread (bench/calls.py splits the workers' CPU by thread name).
THREAD_NAME = "pjsua"


class PjThread(threading.Thread):
    def __init__(self, settings: EndpointSettings, on_event: EventSink):
        super().__init__(name=f"pjsua-{settings.name}", daemon=True)
        self.settings = settings
        self.on_event = on_event
        self.legs: dict[int, Leg] = {}
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._next_leg = 1
        self._running = True
        # Not `_started`: threading.Thread has its own, set as the thread begins, before the endpoint exists.
        self._created = threading.Event()
        self._failed: BaseException | None = None
        # Every pjsua2 call object we made, until pjsua2 reports its call DISCONNECTED; it is let go
        # in that very callback (WorkerCall.onCallState), as pjsua2 asks. pjsua2 gives a finished
        # call's slot to the next call, and a Call object deleted after that hangs up whichever call
        # holds its slot then (603) and cuts that call off from its callbacks: the soak saw a call
        # arriving within milliseconds of another ending on its worker declined, its record open.
        self._calls: set[WorkerCall] = set()
        # Media ports are reused, never destroyed while the endpoint runs: pjmedia 2.15's
        # asynchronous conference bridge may still touch a destroyed port on its next tick
        # (pjproject#3928), which crashed workers under load (docs/BENCHMARKS.md).
        self._free_ports: list[CallMediaPort] = []
        self._all_ports: list[CallMediaPort] = []
        self._waker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.accepting = False
        self._edge = _address(settings.edge)

    # --- called from other threads
    def submit(self, command: Callable[[], None]) -> None:
        self._commands.put(command)
        try:
            self._waker.sendto(b"\r\n\r\n", ("127.0.0.1", self.settings.sip_port))
        except OSError:
            pass

    def wait_started(self, timeout: float = 15) -> None:
        if not self._created.wait(timeout):
            raise RuntimeError("pjsua2 endpoint did not start")
        if self._failed:
            reason = self._failed.info() if isinstance(self._failed, pj.Error) else self._failed
            raise RuntimeError(f"pjsua2 endpoint failed: {reason}")

    def stop(self) -> None:
        self._running = False
        self.submit(lambda: None)

    # --- the pjsua2 thread
    def run(self) -> None:
        set_process_name(THREAD_NAME)  # this thread's name in /proc (its CPU is the bridge's and SIP's)
        try:
            self._create()
        except BaseException as exc:
            self._failed = exc
            self._created.set()
            return
        self._created.set()
        try:
            while self._running:
                self.ep.libHandleEvents(self.clock.wait_ms(self.settings.poll_ms))
                self.clock.run_due()
                while True:
                    try:
                        command = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        command()
                    except Exception:
                        log.exception("pjsua2 command failed")
        finally:
            self._destroy()

    def _create(self) -> None:
        s = self.settings
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = s.max_calls
        cfg.uaConfig.userAgent = "Switchboard"
        cfg.logConfig.level = 2
        cfg.logConfig.consoleLevel = 2
        cfg.logConfig.decor = 0  # time, level and thread come from our log format
        self._log_writer = PjLogWriter(s.name)  # kept referenced: pjsua holds it until libDestroy
        cfg.logConfig.writer = self._log_writer
        med = cfg.medConfig
        med.clockRate = SAMPLE_RATE
        med.sndClockRate = SAMPLE_RATE
        med.channelCount = 1
        med.audioFramePtime = FRAME_MS
        med.ecTailLen = 0  # no echo canceller: there is no loudspeaker next to a microphone here
        med.noVad = True
        med.quality = MEDIA_QUALITY
        self.ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.port = s.sip_port
        tcfg.boundAddress = "127.0.0.1"
        _wait_for_port(s.sip_port, s.name)
        self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        self.ep.libStart()
        # No sound device, not even the null one, whose clock thread would tick the bridge: we do.
        self.clock = BridgeClock(self.ep.audDevManager().setNoDev())
        for codec in self.ep.codecEnum2():
            self.ep.codecSetPriority(codec.codecId, 0)
        for codec, priority in CODEC_PRIORITIES.items():
            self.ep.codecSetPriority(codec, priority)
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:switchboard@127.0.0.1:{s.sip_port}"
        self.account_priority = acfg.priority
        # With a dial account (below), each account takes half of the worker's block (PortBlock.split).
        block = PortBlock(s.rtp_port, s.rtp_ports)
        own = block.split()[0] if s.dial_auth else block
        acfg.mediaConfig.transportConfig.port = own.start
        acfg.mediaConfig.transportConfig.portRange = own.port_range
        if s.media_address:
            acfg.mediaConfig.transportConfig.publicAddress = s.media_address
        if s.outbound_proxy:
            # Our socket is on loopback: calls we place leave through the edge, which owns the SIP port.
            acfg.sipConfig.proxies.append(s.outbound_proxy)
        self.account = WorkerAccount(self)
        self.account.create(acfg)
        self.dial_account: pj.Account | None = None
        if s.dial_auth:
            # A second account, holding the carrier's password, for the calls to the carrier's
            # host alone: pjsip answers any challenge with an account's credentials, so on the
            # one every call uses, a transfers.allowed destination or a caller's trunk could
            # challenge our INVITE or BYE and take away a digest of the password to crack.
            # Lower priority than the first, with the same URI: pjsua offers an incoming call
            # to the first account its Request-URI matches, in priority order, so never to it.
            acfg.priority = self.account_priority - 1
            dial = block.split()[1]
            acfg.mediaConfig.transportConfig.port = dial.start
            acfg.mediaConfig.transportConfig.portRange = dial.port_range
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", s.dial_auth.username, 0,
                                                            s.dial_auth.password))
            self.dial_account = DialAccount(self)
            self.dial_account.create(acfg)

    def _destroy(self) -> None:
        for leg in list(self.legs.values()):
            try:
                leg.call.hangup(pj.CallOpParam(True))
            except Exception:
                pass
        self.legs.clear()
        # Let the bridge drop the hung-up calls, then the ports, before the library goes.
        self._run_for(0.1)
        self._calls.clear()  # before libDestroy: a Call object deleted after it fails pjsua's asserts
        self._free_ports.clear()
        self._all_ports.clear()
        self._run_for(0.2)
        for account in (self.account, self.dial_account):
            try:
                if account is not None:
                    account.shutdown()
            except Exception:
                pass
        self.ep.libDestroy()

    def _run_for(self, seconds: float) -> None:
        """SIP events and bridge ticks for `seconds`: the bridge removes ports only as it ticks."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ep.libHandleEvents(self.clock.wait_ms(int((deadline - time.monotonic()) * 1000)))
            self.clock.run_due()

    def emit(self, event: PjEvent) -> None:
        self.on_event(event)

    def from_edge(self, source: str) -> bool:
        """Whether a request from `source` (pjsip's "host:port") was sent by the SIP edge.

        The edge's trunk check and its X-Switchboard headers are worth something only if
        nothing else can reach the hub through us: the worker's port is on loopback, where
        any process on the box may send. A wildcard edge without an advertised address binds
        each of the box's addresses and relays from the one the call arrived on (measured with
        Kamailio 5.6: a LAN caller's INVITE reached the worker from <LAN address>:<edge port>,
        a loopback caller's from 127.0.0.1:<edge port>), so there only the port is compared. A
        datagram to 127.0.0.1 was sent on this box anyway: the kernel drops loopback-addressed
        packets arriving from outside (net.ipv4.conf.*.route_localnet is 0 by default).
        """
        try:
            address, port = _address(source)
        except ValueError:
            return False
        edge_address, edge_port = self._edge
        return port == edge_port and (edge_address.is_unspecified or address == edge_address)

    def keyed_by_edge(self, message: str) -> bool:
        key = header(message, EDGE_KEY_HEADER) or ""
        return bool(self.settings.edge_key) and hmac.compare_digest(key.encode(), self.settings.edge_key.encode())

    def incoming(self, account: pj.Account, prm: pj.OnIncomingCallParam) -> None:
        leg_id = self._next_leg
        self._next_leg += 1
        call = WorkerCall(self, account, prm.callId, leg_id)
        self._calls.add(call)
        message = prm.rdata.wholeMsg
        if not self.from_edge(prm.rdata.srcAddress) or not self.keyed_by_edge(message):
            log.warning("INVITE from outside the SIP edge refused", extra=log_extra(source=prm.rdata.srcAddress))
            self._reply(call, 403)
            return
        if not self.accepting or len(self.legs) >= self.settings.max_calls:
            self._reply(call, 503, retry_after=True)
            return
        leg = Leg(leg_id, call)
        self.legs[leg_id] = leg
        info = call.getInfo()
        user = _REQUEST_USER.search(message)
        # Both written by the edge, which drops any the caller sent; the packet's own source
        # is the edge itself, so a missing header leaves the source unknown (the hub refuses).
        source = header(message, "X-Switchboard-Source")
        leg.info = {
            "sip_call_id": info.callIdString,
            "from_uri": info.remoteUri,
            "to_uri": info.localUri,
            "to_user": user.group(1) if user else "",
            "trunk": header(message, "X-Switchboard-Trunk"),
            "source": source.strip("[]") if source else None,
        }
        self._reply(call, 180)
        self.emit(CallOffered(leg_id, **leg.info))

    def refuse(self, account: pj.Account, prm: pj.OnIncomingCallParam) -> None:
        """403 to an INVITE offered to an account that takes no calls (the dial account)."""
        call = WorkerCall(self, account, prm.callId, 0)
        self._calls.add(call)
        log.warning("INVITE to the dial account refused", extra=log_extra(source=prm.rdata.srcAddress))
        self._reply(call, 403)

    def _reply(self, call: WorkerCall, code: int, retry_after: bool = False) -> None:
        prm = pj.CallOpParam()
        prm.statusCode = code
        if retry_after:
            header = pj.SipHeader()
            header.hName = "Retry-After"
            header.hValue = str(self.settings.retry_after_s)
            prm.txOption.headers.append(header)
        call.answer(prm)

    def answer(self, leg_id: int, code: int) -> None:
        leg = self.legs.get(leg_id)
        if leg is None:
            return
        if code == 200:
            self._reply(leg.call, 200)
        else:
            leg.call.local_hangup = refused(code)
            self._reply(leg.call, code, retry_after=code == 503)

    def hangup(self, leg_id: int, reason: str) -> None:
        leg = self.legs.get(leg_id)
        if leg is None:
            return
        leg.call.local_hangup = reason
        prm = pj.CallOpParam()
        prm.statusCode = 603 if not leg.answered else 200
        leg.call.hangup(prm)

    def transfer(self, leg_id: int, to: str) -> None:
        leg = self.legs.get(leg_id)
        if leg is None:
            return
        try:
            leg.call.xfer(to, pj.CallOpParam(True))
        except pj.Error as exc:
            self.emit(TransferFinished(leg_id, False, exc.status, exc.reason))

    def dial(self, leg_id: int, uri: str, caller_id: str | None = None) -> None:
        """Place a call for the hub as `caller_id` (From user); the outcome comes back as one `dial_result`."""
        if leg_id in self.legs or len(self.legs) >= self.settings.max_calls:
            self.emit(DialFailed(leg_id, 503, "worker full"))
            return
        call = WorkerCall(self, self._account_for(uri), pj.PJSUA_INVALID_ID, leg_id)
        self._calls.add(call)
        leg = Leg(leg_id, call, outbound=True, info={"to": uri})
        self.legs[leg_id] = leg
        prm = pj.CallOpParam(True)
        if caller_id:
            prm.txOption.localUri = f"sip:{caller_id}@127.0.0.1:{self.settings.sip_port}"
        try:
            call.makeCall(uri, prm)
        except pj.Error as exc:
            self.legs.pop(leg_id, None)
            self._calls.discard(call)  # it never had a slot: nothing to hang up
            self.emit(DialFailed(leg_id, exc.status, exc.reason))

    def _account_for(self, uri: str) -> pj.Account:
        """The dial account for a call to the carrier's termination host, the credential-less one for the rest."""
        auth = self.settings.dial_auth
        if self.dial_account is not None and auth is not None and outbound_hosts([uri]) == [auth.host]:
            return self.dial_account
        return self.account

    def send_dtmf(self, leg_id: int, digits: str) -> None:
        leg = self.legs.get(leg_id)
        if leg is not None and leg.answered:
            leg.call.dialDtmf(digits)  # RFC 4733 by default

    def media_active(self, leg_id: int, call: WorkerCall, index: int) -> None:
        leg = self.legs.get(leg_id)
        if leg is None:
            return
        media = call.getAudioMedia(index)
        if leg.port is not None:
            # Again, after a re-INVITE. One that changed the media (a caller's hold, a=sendonly, then
            # its resume) got the call a new stream in a new bridge slot (pjsua_media.c,
            # is_media_changed), connected to nothing: the caller was silent to the hub and heard
            # nothing from then on. Connecting a pair that is connected already changes nothing.
            _connect(media, leg.port)
            return
        if self._free_ports:
            port = self._free_ports.pop()
            port.received.clear()
            port.playout.clear()
        else:
            port = CallMediaPort()
            port.createPort(f"port{len(self._all_ports)}", audio_format())
            self._all_ports.append(port)
        _connect(media, port)
        leg.port = port
        leg.answered = True
        codec = call.getStreamInfo(index).codecName
        # Only the deques cross threads: the port itself must die on this thread.
        self.emit(LegAnswered(leg_id, codec, port.received, port.playout, leg.outbound))

    def stream_done(self, leg_id: int, counts: RtpCounts) -> None:
        leg = self.legs.get(leg_id)
        if leg is not None:
            leg.rtp = counts if leg.rtp is None else leg.rtp + counts

    def forget(self, call: WorkerCall) -> None:
        """pjsua2 is done with `call` (DISCONNECTED): let the object go while its slot is still its own."""
        self._calls.discard(call)

    def call_ended(self, leg_id: int, reason: str, code: int = 0, sip_reason: str = "") -> None:
        leg = self.legs.pop(leg_id, None)
        if leg is None:
            return
        if leg.port is not None:
            # The call's media is gone from the bridge, so nothing transmits to or from the port.
            self._free_ports.append(leg.port)
        if leg.outbound and not leg.answered:
            # A call we placed that never answered: busy, declined, unknown, cancelled.
            self.emit(DialFailed(leg_id, code, sip_reason))
        elif leg.outbound:
            # The far end of a leg we dialled is the destination, not the caller.
            ended = EndReason.DESTINATION_HANGUP if reason == EndReason.CALLER_HANGUP else reason
            self.emit(LegEnded(leg_id, ended, leg.rtp))
        else:
            self.emit(LegEnded(leg_id, reason, leg.rtp))
