"""The `twilio` trunk preset at work: INVITEs from Twilio's signalling networks are admitted as
trunk `twilio`, INVITEs from anywhere else are refused at the edge.

Twilio's addresses cannot send to us here, so the test lends one to itself: the appliance and
the sipp callers run in a forked child inside a network namespace of its own (as root:
unshare(CLONE_NEWNET)), whose loopback also carries 54.172.60.1 (Twilio, North America
Virginia) and 198.51.100.7 (TEST-NET-2, nobody's). The namespace goes when the child exits,
so nothing on the host changes, whatever happens to the test.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import subprocess
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.appliance import ApplianceProcess
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario, refused_scenario

pytestmark = pytest.mark.sip

NUMBER = "+15017122661"
TWILIO_ADDRESS = "54.172.60.1"  # inside the preset's 54.172.60.0/30
STRANGER_ADDRESS = "198.51.100.7"
CLONE_NEWNET = 0x40000000
T = TypeVar("T")

FLOW = """\
name: goodbye
entry: goodbye
steps:
  goodbye:
    hangup:
"""


def _in_own_network(body: Callable[[], T], addresses: list[str]) -> T:
    """`body()` run in a forked child in a new network namespace: loopback up, with `addresses` on it."""
    if os.geteuid() != 0:
        pytest.fail("a network namespace needs root: run scripts/test.sh as root", pytrace=False)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_end)
        try:
            if ctypes.CDLL(None, use_errno=True).unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            for address in addresses:
                subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
            outcome: tuple[bool, Any] = (True, body())
        except BaseException:
            outcome = (False, traceback.format_exc())
        with os.fdopen(write_end, "wb") as out:
            out.write(pickle.dumps(outcome))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as result:
        data = result.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data) if data else (False, "the child died without a word")
    if not ok:
        raise AssertionError(f"in the test's network namespace:\n{value}")
    return value


def _calls_from_twilio_and_a_stranger(root: Path) -> dict[str, Any]:
    flows = root / "flows"
    flows.mkdir()
    (flows / "goodbye.yaml").write_text(FLOW)
    (root / "appliance").mkdir()
    app = ApplianceProcess(root / "appliance", numbers={NUMBER: "goodbye"}, flows_dir=flows,
                           extra={"trunks": [{"preset": "twilio", "numbers": [NUMBER]}]})
    try:
        app.start()
        twilio_dir, stranger_dir = root / "twilio", root / "stranger"
        twilio_dir.mkdir()
        stranger_dir.mkdir()
        admitted = run_sipp(caller_scenario(twilio_dir, digit=None, wait_ms=0), app.sip_port, twilio_dir,
                            service=NUMBER, local_ip=TWILIO_ADDRESS, timeout=30)
        refused = run_sipp(refused_scenario(stranger_dir, 403), app.sip_port, stranger_dir, service=NUMBER,
                           local_ip=STRANGER_ADDRESS, timeout=30)
        calls = app.wait_calls_closed(1)
        return {"admitted": admitted.successful, "refused": refused.successful, "calls": calls,
                "output": admitted.output + refused.output + app.log_tail()}
    finally:
        app.stop()


def test_twilio_is_admitted_by_the_preset_and_a_stranger_is_refused(tmp_path: Path) -> None:
    seen = _in_own_network(lambda: _calls_from_twilio_and_a_stranger(tmp_path), [TWILIO_ADDRESS, STRANGER_ADDRESS])

    assert seen["admitted"] == 1, seen["output"]
    assert seen["refused"] == 1, seen["output"]  # the stranger's INVITE got 403
    (call,) = seen["calls"]  # and only Twilio's became a call
    assert (call["trunk"], call["end_reason"]) == ("twilio", "flow-hangup"), call
