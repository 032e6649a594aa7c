"""The pjsua2 `Call` and `Account` of a worker: pjsua2's callbacks, turned into calls on PjThread.

Both live on the pjsua2 thread only (sip/endpoint.py); what the hub needs to hear leaves as
sip/events.py events.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pjsua2 as pj

from appliance.core.reasons import EndReason, sip_failure
from appliance.observability.logging import log_extra
from sip.events import DtmfReceived, RtpCounts, TransferFinished

if TYPE_CHECKING:
    from sip.endpoint import PjThread

__all__ = ["WorkerCall", "WorkerAccount", "DialAccount"]

# The endpoint's logger, as before these classes had their own module: the same lines, the same name.
log = logging.getLogger("sip.endpoint")


class WorkerCall(pj.Call):
    """One pjsua2 call. Only the hub places calls: nothing the far end sends makes this one dial.

    Left to its defaults, pjsua2 acts on two requests by itself. A REFER from the far end is
    answered 202 and its Refer-To dialled out through the edge (observed: a caller's REFER to
    sip:+1900...@127.0.0.1:<port> made the box call there, with transfers.allowed empty). An
    INVITE with Replaces naming an answered call is answered 200 without onIncomingCall, so
    without the hub, and the old call is hung up (observed: the caller got a BYE). Both are
    declined here (603). A 3xx to a call we placed is followed if onCallRedirected says so;
    pjsua2's default already stops, and this says it in our code rather than in a default.
    """

    def __init__(self, thread: PjThread, account: pj.Account, call_id: int, leg_id: int):
        super().__init__(account, call_id)
        self.thread = thread
        self.leg_id = leg_id
        self.local_hangup: str | None = None
        self.refused_redirect: tuple[int, str] | None = None  # the 3xx we did not follow

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            # pjsip ends a stopped redirect with 487, as if we had cancelled: report the 3xx instead.
            code, sip_reason = self.refused_redirect or (info.lastStatusCode, info.lastReason)
            reason = self.local_hangup or (EndReason.CALLER_HANGUP if code in (200, 487) else sip_failure(code))
            self.thread.call_ended(self.leg_id, reason, code, sip_reason)
            self.thread.forget(self)  # the last reference: this object goes as the callback returns

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        # Transfers are the hub's to order (a flow's transfer step, checked against
        # transfers.allowed); one the far end asks for is toll fraud waiting to happen.
        prm.statusCode = pj.PJSIP_SC_DECLINE
        log.warning("far end's REFER declined", extra=log_extra(leg=self.leg_id, pii={"refer_to": prm.dstUri}))

    def onCallReplaceRequest(self, prm: pj.OnCallReplaceRequestParam) -> None:
        prm.statusCode = pj.PJSIP_SC_DECLINE
        prm.reason = "Decline"
        log.warning("INVITE with Replaces declined", extra=log_extra(leg=self.leg_id, source=prm.rdata.srcAddress))

    def onCallRedirected(self, prm: pj.OnCallRedirectedParam) -> int:
        # STOP, not REJECT: REJECT goes on to the next target of the 3xx's Contact set.
        if prm.e.type == pj.PJSIP_EVENT_TSX_STATE:
            tsx = prm.e.body.tsxState.tsx
            self.refused_redirect = (tsx.statusCode, tsx.statusText)
        log.warning("redirect not followed", extra=log_extra(leg=self.leg_id, pii={"target": prm.targetUri}))
        return pj.PJSIP_REDIRECT_STOP

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        info = self.getInfo()
        for media in info.media:
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.thread.media_active(self.leg_id, self, media.index)

    def onStreamDestroyed(self, prm: pj.OnStreamDestroyedParam) -> None:
        # The stream's counters die with it (at hang-up, and at a re-INVITE that re-creates it).
        self.thread.stream_done(self.leg_id, _rtp_counts(self.getStreamStat(prm.streamIdx)))

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        # NOTIFYs report the transferee's progress; only the final one decides.
        if prm.finalNotify or prm.statusCode >= 300:
            prm.cont = False
            ok = 200 <= prm.statusCode < 300
            self.thread.emit(TransferFinished(self.leg_id, ok, prm.statusCode, prm.reason))
            if ok:
                self.local_hangup = EndReason.TRANSFERRED

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        method = "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc4733"
        self.thread.emit(DtmfReceived(self.leg_id, prm.digit, method))


def _rtp_counts(stat: pj.StreamStat) -> RtpCounts:
    rx, tx = stat.rtcp.rxStat, stat.rtcp.txStat
    jitter = rx.jitterUsec
    return RtpCounts(received=rx.pkt, lost=rx.loss, discarded=rx.discard, sent=tx.pkt,
                     jitter_max_ms=round(jitter.max / 1000, 1) if jitter.n else 0.0)


class WorkerAccount(pj.Account):
    def __init__(self, thread: PjThread):
        super().__init__()
        self.thread = thread

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.thread.incoming(self, prm)


class DialAccount(WorkerAccount):
    """The account holding the carrier's digest credentials: it places calls to the carrier, takes none."""

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.thread.refuse(self, prm)
