"""A call pjsua2 is done with never touches the next call in its slot.

pjsua2 frees a call's slot once the call is over and gives it to the next call; a `pj.Call`
object deleted after that hangs up whatever call holds its slot number then (603 Decline) and
detaches it from its callbacks, so the hub never hears that call end. The soak found it: a call
arriving on a worker within milliseconds of another one ending there was declined, and its
record stayed open until the appliance stopped. Here the worker holds one call, and two INVITEs
wait in its socket while it is stopped: one sent to it directly (refused 403: its `pj.Call` is
done at once) and a real one through the edge, which takes the same slot.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import ApplianceProcess
from tests.support.sipp.process import SippResult, run_sipp
from tests.support.sipp.scenarios import caller_scenario, forged_invite_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip


def _rx_queue(port: int) -> int:
    """Bytes waiting in the receive queue of the UDP socket bound to 127.0.0.1:`port` (/proc/net/udp)."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local:
            return int(fields[4].split(":")[1], 16)
    raise LookupError(f"no UDP socket on 127.0.0.1:{port}")


def _in_background(run: Callable[[], SippResult]) -> tuple[threading.Thread, list[SippResult]]:
    out: list[SippResult] = []
    thread = threading.Thread(target=lambda: out.append(run()), daemon=True)
    thread.start()
    return thread, out


def test_a_call_done_with_does_not_decline_the_next_call_in_its_slot(appliance_factory, tmp_path: Path) -> None:
    app: ApplianceProcess = appliance_factory(workers=1, calls_per_worker=1)
    worker = app.worker_pid("w1")
    (tmp_path / "forged").mkdir()
    (tmp_path / "caller").mkdir()
    forged = forged_invite_scenario(tmp_path / "forged", trunk="test", source="127.0.0.1", code=403)
    caller = caller_scenario(tmp_path / "caller", digit="1", wait_ms=4000)  # 1 in the default menu

    os.kill(worker, signal.SIGSTOP)
    try:
        refused, refused_result = _in_background(
            lambda: run_sipp(forged, app.worker_base, tmp_path / "forged", timeout=30))
        wait_until(lambda: _rx_queue(app.worker_base) > 0, "the direct INVITE to wait in the worker's socket")
        queued = _rx_queue(app.worker_base)
        trace = tmp_path / "caller" / "messages.log"
        answered, answered_result = _in_background(
            lambda: run_sipp(caller, app.sip_port, tmp_path / "caller", timeout=40,
                             extra=["-trace_msg", "-message_file", str(trace)]))
        # The edge says 100 Trying as it relays the INVITE to the worker.
        wait_until(lambda: "SIP/2.0 100 " in (trace.read_text() if trace.exists() else "")
                   and _rx_queue(app.worker_base) > queued, "the edge's INVITE to wait behind it")
    finally:
        os.kill(worker, signal.SIGCONT)  # both INVITEs are read in one go
    refused.join(40)
    answered.join(50)

    assert refused_result and refused_result[0].successful == 1, refused_result and refused_result[0].output
    assert answered_result and answered_result[0].successful == 1, answered_result and answered_result[0].output
    (call,) = app.wait_calls_closed(1, timeout=20)
    assert call["end_reason"] == "flow-hangup", call
