"""Bridge transfers out through a carrier's termination that asks for a password, as Twilio's does.

Real parts throughout: the appliance with its Kamailio edge and pjsua2 workers, a sipp caller,
and a sipp destination that challenges the box's INVITE with 407 (Twilio's termination) or 401.
The digest in the retried INVITE is checked here from the destination's trace (RFC 2617, no
qop: the challenge offers none), and by sipp's own verifyauth where sipp can (401 only: in
sipp 3.6.1 it reads the Authorization header, never Proxy-Authorization; measured).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.appliance import ROOT, ApplianceProcess
from tests.support.sipp.process import Destination, run_sipp
from tests.support.sipp.scenarios import caller_scenario

pytestmark = pytest.mark.sip

NUMBER = "+15017122661"  # the box's number the caller dialled (a Twilio number, in life)
DESK = "+15550199"
CALLER_ID = "+15017122662"  # transfers.caller_id: what the desk's phone shows
USER = "switchboard-box"
PASSWORD = 'Tw1lio "pa$$word"'
PASSWORD_ENV = "SWITCHBOARD_TEST_TERMINATION_PASSWORD"
REALM = "sip.twilio.com"
NONCE = "9f4c0b5d1a2e"

FLOW = """\
name: to_desk
entry: to_desk
steps:
  to_desk:
    transfer:
      to: "{to}"
      mode: bridge
      timeout: 20
      on_error: goodbye
  goodbye:
    hangup:
"""
GOODBYE = """\
name: goodbye
entry: goodbye
steps:
  goodbye:
    hangup:
"""


def _appliance(appliance_factory: Any, tmp_path: Path, outbound_proxy: str, to: str,
               allowed: list[str]) -> ApplianceProcess:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "to_desk.yaml").write_text(FLOW.format(to=to))
    (flows / "goodbye.yaml").write_text(GOODBYE)
    # "switchboard": the user of the workers' own URI, which the dial account shares.
    return appliance_factory(numbers={NUMBER: "to_desk", "switchboard": "goodbye"}, flows_dir=flows,
                             extra={"transfers": {
        "allowed": allowed, "outbound_proxy": outbound_proxy, "caller_id": CALLER_ID,
        "username": USER, "password_env": PASSWORD_ENV}})


def _call(app: ApplianceProcess, workdir: Path, number: str = NUMBER) -> dict[str, Any]:
    """A caller that stays until the box hangs up; the call's record once it is closed."""
    scenario = caller_scenario(workdir, digit=None, wait_ms=0, bye_timeout_ms=40000)
    result = run_sipp(scenario, app.sip_port, workdir, service=number, timeout=60)
    assert result.successful == 1, result.output + app.log_tail()
    (call,) = app.wait_calls_closed(1, timeout=30)
    return app.call(call["id"])


def _events(detail: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in detail["events"] if e["kind"] == kind]


def _digest(header: str) -> dict[str, str]:
    """The parameters of a Digest credentials header value."""
    assert header.strip().startswith("Digest "), header
    return {k.lower(): v1 or v2 for k, v1, v2 in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', header)}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _header(message: str, name: str) -> str | None:
    match = re.search(rf"^{name}:(.*)$", message.split("\n\n", 1)[0], flags=re.M | re.I)
    return match.group(1).strip() if match else None


@pytest.mark.parametrize("status", [407, 401])
def test_a_bridge_transfer_answers_the_terminations_challenge(appliance_factory, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    # Both INVITEs go to the number at the termination, From the configured caller ID.
    termination = Destination.challenging(
        tmp_path, status=status, realm=REALM, nonce=NONCE, user=USER,
        ruri_regexp=r"^INVITE sip:\+15550199@127\.0\.0\.1:[0-9]+ SIP/2\.0.*From: *<?sip:\+15017122662@",
        verify_password=PASSWORD if status == 401 else None)
    app = _appliance(appliance_factory, tmp_path, f"sip:{termination.uri_host}", DESK, ["+1555*"])

    detail = _call(app, tmp_path)
    uas = termination.wait(20)

    assert uas.successful == 1, uas.output
    (answered,) = _events(detail, "transfer_answered")
    assert answered["code"] == 200, answered
    assert _events(detail, "transfer_ended") == [{"by": "destination", "reason": "destination-hangup"}]
    first, second = termination.requests("INVITE")
    credentials = "Proxy-Authorization" if status == 407 else "Authorization"
    assert _header(first, credentials) is None, "credentials went out before any challenge"
    header = _header(second, credentials)
    assert header is not None, second
    digest = _digest(header)
    request_uri = second.split(" ", 2)[1]
    assert (digest["username"], digest["realm"], digest["nonce"], digest["uri"]) == (USER, REALM, NONCE, request_uri)
    expected = _md5(f"{_md5(f'{USER}:{REALM}:{PASSWORD}')}:{NONCE}:{_md5('INVITE:' + request_uri)}")
    assert digest["response"] == expected, "the digest is not of the configured password"
    assert PASSWORD not in app.log_path.read_text(), "the password reached the log"


def test_a_wrong_password_is_refused_by_the_termination(appliance_factory, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # The same check with the wrong password configured: sipp's verifyauth says no, and the
    # transfer ends on the termination's 403. (So the right-password test above can fail.)
    monkeypatch.setenv(PASSWORD_ENV, "not the password")
    termination = Destination.challenging(tmp_path, status=401, realm=REALM, nonce=NONCE, user=USER,
                                          ruri_regexp=r"^INVITE sip:\+15550199@", verify_password=PASSWORD)
    app = _appliance(appliance_factory, tmp_path, f"sip:{termination.uri_host}", DESK, ["+1555*"])

    detail = _call(app, tmp_path)
    termination.wait(20)

    (result,) = _events(detail, "transfer_result")
    assert (result["ok"], result["code"]) == (False, 403), result


def test_no_other_destination_gets_the_credentials(appliance_factory, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # An allowed SIP destination that is not the termination challenges too: the box does not
    # answer with the carrier's password (nor with anything), and the transfer fails on the 407.
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    desk = Destination.challenging(tmp_path, status=407, realm=REALM, nonce=NONCE, user=USER,
                                   ruri_regexp=r"^INVITE sip:desk@", retry_timeout_ms=3000)
    to = f"sip:desk@{desk.uri_host}"
    # The termination is another port of this host: host:port is what must match.
    app = _appliance(appliance_factory, tmp_path, f"sip:127.0.0.1:{desk.port + 1}", to, [to])

    detail = _call(app, tmp_path)
    desk.wait(20)

    (result,) = _events(detail, "transfer_result")
    assert (result["ok"], result["code"]) == (False, 407), result
    invites = desk.requests("INVITE")
    assert len(invites) == 1 and _header(invites[0], "Proxy-Authorization") is None, invites


def test_a_call_to_the_workers_own_uri_is_not_taken_by_the_dial_account(appliance_factory, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Both accounts are sip:switchboard@127.0.0.1:<port>; pjsua picks by priority, and the dial
    # account (which refuses every call, 403) has the lower one. A caller naming that URI gets
    # the ordinary account: the call is admitted and runs its flow.
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    app = _appliance(appliance_factory, tmp_path, "sip:127.0.0.1:9", DESK, ["+1555*"])

    detail = _call(app, tmp_path, number="switchboard")

    assert (detail["flow"], detail["end_reason"]) == ("goodbye", "flow-hangup"), detail
    assert "INVITE to the dial account refused" not in app.log_path.read_text()


def test_a_missing_password_stops_the_box_with_the_key_to_fix(tmp_path: Path) -> None:
    config = tmp_path / "appliance.yaml"
    config.write_text(yaml.safe_dump({
        "transfers": {"outbound_proxy": "sip:example.pstn.twilio.com", "username": USER, "password_env": PASSWORD_ENV},
        "data_dir": str(tmp_path / "data"), "recordings_dir": str(tmp_path / "recordings")}))
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}

    run = subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(config), "run"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)

    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip() == (f"appliance: transfers.password_env: the variable {PASSWORD_ENV} is unset or empty "
                                  "(the password for sip:example.pstn.twilio.com)")
