"""A flow's transfer step sends the caller elsewhere with a REFER, through the edge.

sipp is the caller: it presses the key, receives the REFER over the record-routed dialog
and accepts it (NOTIFY "SIP/2.0 200 OK") or declines it. A destination the admin has not
allowed never gets that far: the appliance refuses to start.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from appliance.flow.loader import load_dir
from appliance.flow.simulate import Simulation
from tests.support.appliance import ROOT, ApplianceProcess
from tests.support.ports import free_port_block
from tests.support.sipp.process import run_sipp, send_cue
from tests.support.sipp.scenarios import keys, transferee_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip

FLOW = """\
name: operator_line
description: One key to the operator.
entry: welcome
steps:
  welcome:
    say: Welcome to the operator line.
    next: menu
  menu:
    menu:
      prompt: For the operator, press 1.
      options:
        "1": to_operator
      timeout: 5
      retries: 1
      no_input: goodbye
      no_match: goodbye
  to_operator:
    transfer:
      to: {to}
      announcement: Transferring you to the operator.
      on_error: no_operator
  no_operator:
    say: Sorry, the operator cannot take your call.
    next: goodbye
  goodbye:
    hangup:
"""


def _flows(directory: Path, to: str) -> Path:
    directory.mkdir()
    (directory / "operator_line.yaml").write_text(FLOW.format(to=to))
    return directory


def _operator() -> str:
    # Nobody listens there: the caller only pretends to have called it, as the NOTIFY says.
    return f"sip:operator@127.0.0.1:{free_port_block(1)}"


def _call(app: ApplianceProcess, scenario: Path, workdir: Path) -> dict[str, Any]:
    """Run the caller; press the key on cue once the menu is playing; the closed call's record.

    The cue comes after the welcome, so sipp has long acknowledged the answer and waits for it.
    """
    sipp_port = free_port_block(1)
    results = []
    caller = threading.Thread(target=lambda: results.append(
        run_sipp(scenario, app.sip_port, workdir, service="300", timeout=60, sip_port=sipp_port)))
    caller.start()
    try:
        def menu_started() -> list[dict[str, Any]]:
            calls = app.calls()
            events = app.call(calls[0]["id"])["events"] if calls else []
            return events if any(e["kind"] == "step" and e["data"]["step"] == "menu" for e in events) else []

        events = wait_until(menu_started, "the menu to start", 30, detail=app.log_tail)
        offered = next(e["data"] for e in events if e["kind"] == "offered")
        send_cue(sipp_port, offered["sip_call_id"])
        (call,) = app.wait_calls_closed(1, timeout=40)
    finally:
        caller.join(90)
    (result,) = results
    assert result.successful == 1, result.output
    return app.call(call["id"])


def _simulated_steps(flows: Path, to: str, transfer_ok: bool) -> list[str]:
    loaded = load_dir(flows, transfers_allowed=[to])["operator_line"]

    async def run() -> list[str]:
        sim = Simulation(loaded, transfer_ok=transfer_ok)
        await sim.start()
        await sim.line("#1")
        assert sim.engine.finished
        return sim.steps

    return asyncio.run(run())


def _events(call: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in call["events"] if e["kind"] == kind]


def test_accepted_refer_ends_the_call_as_transferred(appliance_factory, tmp_path: Path) -> None:
    to = _operator()
    flows = _flows(tmp_path / "flows", to)
    app = appliance_factory(numbers={"300": "operator_line"}, flows_dir=flows,
                            extra={"transfers": {"allowed": [to]}})
    scenario = transferee_scenario(tmp_path, [keys("1")], refer_to_regexp=re.escape(to))

    call = _call(app, scenario, tmp_path)

    assert call["end_reason"] == "transferred"
    assert _events(call, "transfer") == [{"to": to, "mode": "refer"}]
    assert [r["ok"] for r in _events(call, "transfer_result")] == [True]
    assert _events(call, "ended")[0]["reason"] == "transferred"
    steps = [s["step"] for s in _events(call, "step")]
    assert steps == _simulated_steps(flows, to, transfer_ok=True)
    assert steps == ["welcome", "menu", "to_operator"]


def test_declined_refer_takes_the_on_error_branch(appliance_factory, tmp_path: Path) -> None:
    to = _operator()
    flows = _flows(tmp_path / "flows", to)
    app = appliance_factory(numbers={"300": "operator_line"}, flows_dir=flows,
                            extra={"transfers": {"allowed": [to]}})
    scenario = transferee_scenario(tmp_path, [keys("1")], refer_to_regexp=re.escape(to), decline="603 Decline")

    call = _call(app, scenario, tmp_path)

    assert call["end_reason"] == "flow-hangup"
    assert _events(call, "transfer") == [{"to": to, "mode": "refer"}]
    (result,) = _events(call, "transfer_result")
    assert result["ok"] is False and result["code"] == 603, result
    assert "Sorry, the operator cannot take your call." in [s["text"] for s in _events(call, "say")]
    steps = [s["step"] for s in _events(call, "step")]
    assert steps == _simulated_steps(flows, to, transfer_ok=False)
    assert steps == ["welcome", "menu", "to_operator", "no_operator", "goodbye"]
    variables = {v["name"]: v["value"] for v in _events(call, "variable")}
    assert variables["transfer_error"].startswith("603"), variables


def test_transfer_destination_not_allowed_refuses_to_start(tmp_path: Path) -> None:
    to = "sip:operator@198.51.100.7"
    flows = _flows(tmp_path / "flows", to)
    app = ApplianceProcess(tmp_path, numbers={"300": "operator_line"}, flows_dir=flows,
                           extra={"transfers": {"allowed": ["sip:operator@127.0.0.1:*"]}})
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(app.config_path), "run"],
        cwd=ROOT, env=app.env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = (flows / "operator_line.yaml").read_text().splitlines()
    line = next(i for i, text in enumerate(lines, start=1) if text.strip().startswith("to:"))
    column = lines[line - 1].index(to) + 1
    expected = (f"{flows / 'operator_line.yaml'}:{line}:{column}: transfer destination {to} is not allowed "
                "(transfers.allowed in appliance.yaml)")
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
