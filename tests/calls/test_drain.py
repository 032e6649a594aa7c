"""`appliance drain` against a real appliance: sipp callers through the Kamailio edge into
pjsua2 workers, the command run as an admin (or the deploy role) runs it."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import yaml

from tests.support.appliance import ROOT, ApplianceProcess
from tests.support.held_call import WAIT_S, hold_flows, live_call
from tests.support.ports import free_port_block
from tests.support.sipp.process import options_status, run_sipp
from tests.support.sipp.scenarios import refused_scenario
from tests.support.wait import wait_until

pytestmark = pytest.mark.sip


@pytest.fixture
def app(appliance_factory, tmp_path: Path) -> ApplianceProcess:
    return appliance_factory(workers=1, flows_dir=hold_flows(tmp_path / "flows"), numbers={"100": "hold"})


def cli(app: ApplianceProcess, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "appliance.cli", "--config", str(app.config_path), *args],
                            cwd=ROOT, env=env or app.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=WAIT_S * 2)
    return process.returncode, out, err


def test_drain_refuses_new_calls_503_while_the_live_call_finishes(app: ApplianceProcess, tmp_path: Path) -> None:
    assert app.get("/healthz", auth=False)["draining"] is False
    with live_call(app, tmp_path / "live") as live:
        draining = cli(app, "drain", "--timeout", str(WAIT_S * 2))
        wait_until(lambda: app.get("/healthz", auth=False)["draining"], "draining", WAIT_S, interval=0.2)
        health = app.get("/healthz", auth=False)
        assert health["calls_active"] == 1 and health["ok"]
        assert app.metric("switchboard_draining") == 1.0

        refused = run_sipp(refused_scenario(tmp_path, 503, "Retry-After: *5"), app.sip_port, tmp_path)
        assert refused.successful == 1, refused.output
        assert options_status(app.sip_port) == "SIP/2.0 200 OK", "carriers' health checks are still answered"
        # Retention beside the running appliance never touches a call in progress.
        pruned = finish(cli(app, "recordings", "prune", "--older-than", "0.000001"))
        assert pruned[0] == 0 and "removed 0 files" in pruned[1], pruned
        assert draining.poll() is None, "drain waits while a call is live"

    (result,) = live.results
    assert result.successful == 1, result.output  # its BYE passed the edge and got 200
    code, out, err = finish(draining)
    assert code == 0, (out, err)
    assert "draining: new calls get 503; 1 calls live" in out and "drained: no calls live" in out
    call = app.call(live.id)
    assert call["end_reason"] == "caller-hangup"
    assert len(app.calls()) == 1, "the refused INVITE never became a call"

    code, out, err = finish(cli(app, "drain", "--cancel"))
    assert code == 0 and "taking new calls again" in out, (out, err)
    assert app.get("/healthz", auth=False)["draining"] is False
    assert app.metric("switchboard_draining") == 0.0
    with live_call(app, tmp_path / "after") as after:
        pass
    assert after.results[0].successful == 1, after.results[0].output

    # The ended calls' recordings can now go; the API then says why they are gone.
    code, out, _ = finish(cli(app, "recordings", "prune", "--older-than", "0.000001"))
    assert code == 0 and "removed 2 files of 2 calls" in out, out
    with pytest.raises(urllib.error.HTTPError) as gone:
        app.get(f"/api/calls/{live.id}/recording")
    assert gone.value.code == 410


def test_drain_times_out_with_exit_1_and_a_restart_takes_calls_again(app: ApplianceProcess, tmp_path: Path) -> None:
    wrong = finish(cli(app, "drain", "--timeout", "5", env=app.env | {"SWITCHBOARD_API_SECRET": "not-the-secret"}))
    assert wrong[0] == 2 and "answered 401" in wrong[1], wrong
    assert app.get("/healthz", auth=False)["draining"] is False

    with live_call(app, tmp_path / "live") as live:
        code, out, err = finish(cli(app, "drain", "--timeout", "1"))
        assert code == 1, (out, err)
        assert "timed out after 1 s: 1 calls still live" in out
        assert app.get("/healthz", auth=False)["draining"] is True, "the drain stays on after a timeout"
    assert live.results[0].successful == 1, live.results[0].output

    app.stop()
    app.start()
    assert app.get("/healthz", auth=False)["draining"] is False
    with live_call(app, tmp_path / "after-restart") as after:
        pass
    assert after.results[0].successful == 1, after.results[0].output


def test_drain_of_an_appliance_that_is_not_running_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text(yaml.safe_dump({"http": {"host": "127.0.0.1", "port": free_port_block(1)},
                                      "data_dir": str(tmp_path / "data"), "flows_dir": str(ROOT / "flows")}))
    for args in (["drain", "--timeout", "3"], ["drain", "--cancel"]):
        result = subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(config), *args],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result
        assert "cannot reach the appliance at http://127.0.0.1:" in result.stdout
        assert "Traceback" not in result.stderr
    bad = subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(config), "drain", "--timeout", "-1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "argument --timeout: must be at least 0" in bad.stderr
