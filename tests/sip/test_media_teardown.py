"""A call torn down while its RTP is on its way out does not abort the worker.

Twice in 18,000 soak calls a SIP worker aborted on pjlib's `pj_ioqueue_sendto: Assertion
'key && op_key && data && length'`, each time near a hang-up (docs/BENCHMARKS.md, "Soak"). The
sender was the conference bridge's clock, a thread of pjmedia's own, caught inside the call's
UDP send after its `started` test, while the pjsua2 thread tore the call's media down and
cleared the socket key it was about to use. Here gdb holds the sender at that very point
(tests/support/rtp_sender_hold.py), the caller hangs up, and the sender is let go.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.support.appliance import ApplianceProcess
from tests.support.ports import free_port_block
from tests.support.rtp_sender_hold import RtpSenderHold
from tests.support.sipp.process import SippResult, run_sipp, send_cue
from tests.support.sipp.scenarios import cued_hangup_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip


def test_a_call_hung_up_while_its_rtp_is_being_sent_does_not_abort_the_worker(
        appliance_factory, tmp_path: Path) -> None:
    app: ApplianceProcess = appliance_factory(workers=1, calls_per_worker=1)
    worker = app.worker_pid("w1")
    scenario = cued_hangup_scenario(tmp_path, [[]], hangup_after_ms=0)  # hangs up on the test's cue
    sipp_port = free_port_block(1)
    results: list[SippResult] = []
    caller = threading.Thread(target=lambda: results.append(
        run_sipp(scenario, app.sip_port, tmp_path, timeout=60, sip_port=sipp_port)), daemon=True)
    caller.start()
    (call,) = app.wait_answered(1)
    offered = next(e for e in app.call(call["id"])["events"] if e["kind"] == "offered")

    sender = RtpSenderHold(worker, tmp_path)
    try:
        sender.hold()
        send_cue(sipp_port, offered["data"]["sip_call_id"])
        # The BYE reaches the worker now. Whether its teardown can run while the sender is held
        # is the point: it could while the bridge had a clock thread of its own (and the released
        # sender then aborted the worker); the sender is the pjsua2 thread now, so it waits. At
        # most 1 s: the edge answers a BYE unanswered for 2 s (its fr_timer) with 408 itself.
        try:
            wait_until(lambda: app.calls()[0]["ended_at"], "the call to be torn down", timeout=1)
        except AssertionError:
            pass
    finally:
        sender.release()
    caller.join(60)

    log = app.log_tail(200)
    assert "pj_ioqueue_sendto: Assertion" not in log, log
    assert app.worker_pid("w1") == worker, log
    (closed,) = app.wait_calls_closed(1, timeout=20)
    assert closed["end_reason"] == "caller-hangup", closed
    assert results and results[0].successful == 1, results and results[0].output
