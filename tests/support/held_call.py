"""A caller held on the line for as long as a test needs: a sipp caller in a flow that holds it
until it hangs up, which it does (through the edge) when the test's block ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.appliance import ApplianceProcess
from tests.support.ports import free_port_block
from tests.support.sipp.process import SippResult, run_sipp, send_cue
from tests.support.sipp.scenarios import cued_hangup_scenario
from tests.support.wait import wait_until

__all__ = ["HOLD", "WAIT_S", "LiveCall", "hold_flows", "live_call"]

# Answers and holds the caller (up to three minutes) until the caller hangs up.
HOLD = {
    "name": "hold",
    "entry": "wait",
    "steps": {
        "wait": {"menu": {"prompt": "Please hold.", "options": {"1": "done"}, "timeout": 60, "retries": 2,
                          "no_input": "done", "no_match": "done"}},
        "done": {"hangup": {"reason": "flow-hangup"}},
    },
}
WAIT_S = 60  # how long the test waits for anything before it fails (never a measured bound)


def hold_flows(directory: Path) -> Path:
    """A flows directory holding only the hold flow, for `ApplianceProcess(numbers={"100": "hold"})`."""
    directory.mkdir()
    (directory / "hold.yaml").write_text(yaml.safe_dump(HOLD))
    return directory


@dataclass
class LiveCall:
    id: str
    record: dict  # the call's record when it was answered (its worker, its id)
    results: list[SippResult]  # sipp's, once the caller has hung up


@contextmanager
def live_call(app: ApplianceProcess, workdir: Path) -> Iterator[LiveCall]:
    """A sipp caller on hold until the block ends; then it sends its BYE (through the edge)."""
    workdir.mkdir()
    sipp_port = free_port_block(1)
    before = {c["id"] for c in app.calls()}
    results: list[SippResult] = []
    caller = threading.Thread(target=lambda: results.append(run_sipp(
        cued_hangup_scenario(workdir, [[]], hangup_after_ms=0), app.sip_port, workdir,
        timeout=WAIT_S * 2, sip_port=sipp_port)))
    caller.start()
    sip_call_id = None
    try:
        (call,) = wait_until(lambda: [c for c in app.calls() if c["id"] not in before and c["answered_at"]],
                             "the call to be answered", WAIT_S, interval=0.2, detail=app.log_tail)
        offered = next(e for e in app.call(call["id"])["events"] if e["kind"] == "offered")
        sip_call_id = offered["data"]["sip_call_id"]
        yield LiveCall(call["id"], call, results)
    finally:
        if sip_call_id is not None:
            send_cue(sipp_port, sip_call_id)
        caller.join(WAIT_S * 2 + 30)
