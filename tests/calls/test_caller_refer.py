"""No request from outside makes the box place a call the hub did not order.

Left to pjsua2's defaults, a caller's in-dialog REFER is accepted and its Refer-To dialled,
and an INVITE with Replaces takes over an answered call without the hub hearing of it; a
bridge destination's 3xx must not be followed either. sipp plays the callers and the
destinations, and a second sipp listens where such a call would go. The hub's own REFER
transfer is in test_transfer.py.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support.appliance import ApplianceProcess
from tests.support.sipp.process import Bystander, redirecting_destination, run_sipp
from tests.support.sipp.scenarios import (
    caller_refer_scenario,
    caller_replaces_scenario,
    caller_scenario,
)

pytestmark = pytest.mark.sip

PREMIUM = "+19005550100"  # a number a toll fraudster would want the box to call


def _closed_call(app: ApplianceProcess) -> tuple[dict[str, Any], list[str]]:
    """The only call's record, and its event kinds as SQLite has them."""
    (call,) = app.wait_calls_closed(1)
    with sqlite3.connect(app.data_dir / "switchboard.db") as db:
        kinds = [kind for (kind,) in db.execute("select kind from call_events where call_id = ? order by id",
                                                (call["id"],))]
    return call, kinds


def test_a_callers_refer_is_declined_and_nobody_is_dialled(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(workers=1, extra={"transfers": {"allowed": []}})
    with Bystander(tmp_path / "bystander") as bystander:
        scenario = caller_refer_scenario(tmp_path, f"sip:{PREMIUM}@{bystander.uri_host}", code=603)
        result = run_sipp(scenario, app.sip_port, tmp_path, service="100", timeout=30)
        call, kinds = _closed_call(app)
        assert bystander.requests() == [], "the box called where the caller's REFER pointed"

    assert result.successful == 1, result.output  # the REFER got 603, and the call took the BYE
    assert call["end_reason"] == "caller-hangup", call
    assert not [kind for kind in kinds if kind.startswith("transfer")], kinds


def test_an_invite_replacing_an_answered_call_is_declined(appliance_factory, tmp_path: Path) -> None:
    # One worker, so the second INVITE meets the dialog it names (the edge spreads new INVITEs).
    app = appliance_factory(workers=1)

    result = run_sipp(caller_replaces_scenario(tmp_path, code=603), app.sip_port, tmp_path, service="100", timeout=30)

    assert result.successful == 1, result.output  # 603 to the Replaces, and the first call took the BYE
    call, _ = _closed_call(app)
    assert call["end_reason"] == "caller-hangup", call
    assert len(app.calls()) == 1


BRIDGE_FLOW = """\
name: desk_line
entry: to_desk
steps:
  to_desk:
    transfer:
      to: "{to}"
      mode: bridge
      timeout: 10
      on_error: desk_unavailable
  desk_unavailable:
    say: Sorry, the desk cannot take your call.
    next: goodbye
  goodbye:
    hangup:
"""


def test_a_redirect_from_a_bridge_destination_is_not_followed(appliance_factory, tmp_path: Path) -> None:
    with Bystander(tmp_path / "bystander") as bystander:
        destination = redirecting_destination(tmp_path, f"sip:{PREMIUM}@{bystander.uri_host}")
        to = f"sip:desk@{destination.uri_host}"
        flows = tmp_path / "flows"
        flows.mkdir()
        (flows / "desk_line.yaml").write_text(BRIDGE_FLOW.format(to=to))
        app = appliance_factory(workers=1, numbers={"400": "desk_line"}, flows_dir=flows,
                                extra={"transfers": {"allowed": [to]}})
        caller = caller_scenario(tmp_path, digit=None, wait_ms=0, bye_timeout_ms=30000)

        result = run_sipp(caller, app.sip_port, tmp_path, service="400", timeout=45)

        call, kinds = _closed_call(app)
        redirected = destination.wait(10)
        assert bystander.requests() == [], "the box followed the destination's 302"

    assert result.successful == 1, result.output
    assert redirected.successful == 1, redirected.output  # it was called once and sent its 302
    detail = app.call(call["id"])
    (outcome,) = [e["data"] for e in detail["events"] if e["kind"] == "transfer_result"]
    assert outcome["ok"] is False and outcome["code"] == 302, outcome
    assert [e["data"]["step"] for e in detail["events"] if e["kind"] == "step"] == \
        ["to_desk", "desk_unavailable", "goodbye"]
    assert call["end_reason"] == "flow-hangup", call
