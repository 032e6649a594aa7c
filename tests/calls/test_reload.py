"""Editing flows/ while calls run: new calls take the new version, a broken edit changes nothing."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tests.support.appliance import ROOT
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip


def test_hot_reload_keeps_calls_on_their_version_and_rejects_broken_edits(appliance_factory, tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", flows)
    app = appliance_factory(flows_dir=flows)
    default = flows / "default.yaml"

    first_dir = tmp_path / "first"
    first_dir.mkdir()
    first = threading.Thread(
        target=run_sipp,
        args=(caller_scenario(first_dir, None, wait_ms=1000, bye_timeout_ms=40000), app.sip_port, first_dir),
        kwargs={"timeout": 60},
    )
    first.start()
    try:
        wait_until(lambda: any(c["answered_at"] for c in app.calls()), "the first call answered", interval=0.2)
        (call_1,) = app.calls()

        default.write_text(default.read_text().replace("Welcome to Switchboard.", "Welcome to the new Switchboard."))
        wait_until(lambda: "flows reloaded" in app.log_path.read_text(), "the edit reloaded", interval=0.2)

        second = tmp_path / "second"
        second.mkdir()
        assert run_sipp(caller_scenario(second, "1"), app.sip_port, second).successful == 1
        wait_until(lambda: len([c for c in app.calls() if c["ended_at"]]) >= 1, "a call closed", interval=0.2)
        call_2 = next(c for c in app.calls() if c["id"] != call_1["id"])
        assert call_2["flow_version"] != call_1["flow_version"]
        said = [e["data"]["text"] for e in app.call(call_2["id"])["events"] if e["kind"] == "say"]
        assert said[0] == "Welcome to the new Switchboard."
        # The call that started before the edit still runs the old version.
        assert app.call(call_1["id"])["ended_at"] is None
        assert app.call(call_1["id"])["flow_version"] == call_1["flow_version"]

        default.write_text(default.read_text().replace("next: main_menu", "next: nowhere"))
        wait_until(lambda: "flow edit rejected" in app.log_path.read_text(), "the broken edit rejected", interval=0.2)
        log = app.log_path.read_text()
        assert f"{default}:" in log and "step 'nowhere' does not exist" in log
        assert 'switchboard_flow_reload_errors_total 1.0' in app.get("/metrics").decode()

        third = tmp_path / "third"
        third.mkdir()
        assert run_sipp(caller_scenario(third, "2"), app.sip_port, third).successful == 1
        wait_until(lambda: len([c for c in app.calls() if c["ended_at"]]) >= 2, "two calls closed", interval=0.2)
        call_3 = next(c for c in app.calls() if c["id"] not in (call_1["id"], call_2["id"]))
        assert call_3["flow_version"] == call_2["flow_version"]
        assert call_3["end_reason"] == "flow-hangup"
    finally:
        first.join(90)
    assert app.call(call_1["id"])["end_reason"] == "flow-hangup"
