"""ansible/site.yml on a fresh Debian 12 box booted with systemd: converge, idempotence, the
service as deployed, calls, checked flows, timers, and drained upgrades with rollback.

The tests run in file order on one box per module, each starting from where the last left it,
as an admin's deployments follow one another. The box shares this machine's network, so the
appliance's ports come from tests/support/ports.py. Converge times are printed, not asserted.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import shutil
import socket
import sqlite3
import ssl
import threading
import time
import tomllib
import urllib.request
import wave
from pathlib import Path
from typing import Any

import pytest

from appliance.config import ConsoleConfig
from appliance.console.tls import ensure_certificate
from appliance.rooms.tokens import TokenAuthority
from tests.deploy.box import Box
from tests.deploy.deployment import ROOT, Deployment, Run
from tests.support.sipp.process import SippResult, run_sipp
from tests.support.sipp.scenarios import caller_scenario, refused_scenario
from tests.support.wait import wait_until
from tests.test_systemd_unit import EXPOSURE_MAX, HARDENING

pytestmark = pytest.mark.deploy

# A caller held on the line for ~45 s without pressing anything: a call live through an upgrade.
HOLD_FLOW = """\
name: hold
description: Keeps the caller for about 45 seconds, then hangs up.
entry: wait
steps:
  wait:
    menu:
      prompt: Please hold.
      options:
        "1": done
      timeout: 45
      retries: 0
      no_input: done
      no_match: done
  done:
    hangup:
      reason: flow-hangup
"""
ROLE = ROOT / "ansible" / "roles" / "switchboard"
RETENTION_S = 0.864  # switchboard_recordings_days in seconds: the prune test waits out twice this
# The admin's secrets: from their shell's environment (the signing secret) and their vault.
API_SECRET = secrets.token_urlsafe(32)
CARRIER_PASSWORD = secrets.token_urlsafe(16)
USERS = [
    {"name": "alice", "role": "admin", "password": secrets.token_urlsafe(12)},
    {"name": "bob", "role": "operator", "queues": ["billing"], "password": secrets.token_urlsafe(12)},
    {"name": "carol", "role": "supervisor", "password": secrets.token_urlsafe(12), "disabled": True},
]
BROKEN_FLOW = "name: broken\nentry: start\nsteps:\n  start:\n    say: Hello.\n    next: nowhere\n"


@pytest.fixture(scope="module")
def deployment(box: Box, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    repo = tmp_path_factory.mktemp("admin-repo")
    # The admin's own certificate for the console (one naming 127.0.0.1, as the appliance would make).
    cert, key = ensure_certificate(ConsoleConfig(), tmp_path_factory.mktemp("admin-tls"))
    deployment = Deployment(box, repo, environment={"SWITCHBOARD_API_SECRET": API_SECRET}, settings={
        "switchboard_numbers": {"100": "default", "200": "hold"},
        "switchboard_trunks": [
            {"name": "test", "sources": ["127.0.0.0/8"]},
            # Documentation's network (TEST-NET-1): only its password file matters here.
            {"name": "carrier", "sources": ["192.0.2.0/24"], "username": "pbx1", "password": CARRIER_PASSWORD},
        ],
        "switchboard_users": USERS,
        "switchboard_console_cert": cert.read_text(),
        "switchboard_console_key": key.read_text(),
        "switchboard_health_timeout": 20,
        # A hundred-thousandth of a day (under a second): every call is old enough for the prune timer.
        "switchboard_recordings_days": RETENTION_S / 86400,
        "switchboard_backup_keep": 2,
        # The tests start the timers' services themselves; the timers must not fire between them
        # (daily they would, once a day, in the middle of a run).
        "switchboard_prune_on_calendar": "*-06-15 12:00:00",
        "switchboard_backup_on_calendar": "*-06-15 12:30:00",
    })
    (deployment.flows / "hold.yaml").write_text(HOLD_FLOW)
    return deployment


def _ok(run: Run) -> Run:
    assert run.returncode == 0, run.output[-8000:]
    return run


def _calls(box: Box) -> list[dict[str, Any]]:
    return json.loads(box.run("/usr/local/sbin/appliance", "calls", "--json", "--limit", "100").stdout)


def _in_box(box: Box, path: str) -> Path:
    return box.root / path.lstrip("/")


def _main_pid(box: Box) -> int:
    return int(box.run("systemctl", "show", "--value", "-p", "MainPID", "switchboard.service").stdout)


def _release(box: Box) -> str:
    return (box.root / "opt/switchboard/current").readlink().name


def _healthz(deployment: Deployment) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{deployment.http_port}/healthz", timeout=5) as reply:
        return json.load(reply)


def _call(deployment: Deployment, workdir: Path, digit: str | None = "1") -> SippResult:
    workdir.mkdir(parents=True, exist_ok=True)
    return run_sipp(caller_scenario(workdir, digit), deployment.sip_port, workdir)


def _release_source(tmp_path: Path, version: str, broken: bool = False) -> Path:
    """A checkout of this code as another version; `broken`: one whose appliance dies at start."""
    source = tmp_path / f"switchboard-{version}"
    source.mkdir()
    text = (ROOT / "pyproject.toml").read_text()
    # Every package the wheel holds, as pyproject.toml names them (a new one must not be left out).
    for pattern in tomllib.loads(text)["tool"]["setuptools"]["packages"]["find"]["include"]:
        name = pattern.rstrip("*")
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "pyproject.toml").write_text(re.sub(r'(?m)^version = "[^"]+"', f'version = "{version}"', text, count=1))
    if broken:
        with (source / "appliance" / "app.py").open("a") as app:
            app.write('\nraise RuntimeError("this release is broken")\n')
    return source


def test_a_fresh_box_converges_and_a_second_run_changes_nothing(deployment: Deployment) -> None:
    first = _ok(deployment.converge())
    second = _ok(deployment.converge())
    print(f"\nconverge of a fresh box: {first.seconds:.0f} s; second run: {second.seconds:.0f} s")
    assert second.changed == 0, second.changed_tasks()


def test_the_appliance_runs_hardened_as_the_switchboard_user(box: Box) -> None:
    assert box.run("systemctl", "is-active", "switchboard.service").stdout.strip() == "active"
    status = box.run("cat", f"/proc/{_main_pid(box)}/status").stdout
    uid = box.run("id", "-u", "switchboard").stdout.strip()
    assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M), status
    unit = (box.root / "etc/systemd/system/switchboard.service").read_text()
    for key, value in HARDENING.items():
        assert re.search(rf"^{key}={re.escape(value)}$", unit, re.M), f"{key}={value} missing from the deployed unit"
    security = box.run("systemd-analyze", "security", "--no-pager", "switchboard.service", check=False).stdout
    found = re.search(r"Overall exposure level for switchboard\.service: (\d+\.\d+) (\S+)", security)
    assert found, security
    print(f"\nsystemd-analyze security switchboard (deployed): {found.group(1)} {found.group(2)}")
    assert float(found.group(1)) <= EXPOSURE_MAX


def test_secrets_accounts_and_the_admins_certificate_are_in_place(deployment: Deployment, box: Box) -> None:
    uid = int(box.run("id", "-u", "switchboard").stdout)
    environment = box.root / "etc/switchboard/secrets.env"
    assert (environment.stat().st_uid, environment.stat().st_mode & 0o777) == (0, 0o600)
    password = box.root / "etc/switchboard/trunk-carrier.password"
    assert (password.stat().st_uid, password.stat().st_mode & 0o777) == (uid, 0o600)
    assert password.read_text() == CARRIER_PASSWORD + "\n"
    assert API_SECRET not in (box.root / "etc/switchboard/appliance.yaml").read_text()

    # The signing secret from the admin's environment is the one the appliance checks tokens with.
    token = TokenAuthority("switchboard", API_SECRET).mint("deploy-test", "admin")
    request = urllib.request.Request(f"http://127.0.0.1:{deployment.http_port}/api/calls",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200

    listed = box.run("/usr/local/sbin/appliance", "users", "list").stdout
    rows = {line.split()[0]: line.split()[1:] for line in listed.splitlines()[1:]}
    assert rows == {"alice": ["admin", "no", "-"], "bob": ["operator", "no", "billing"],
                    "carol": ["supervisor", "yes", "-"]}, listed

    # The console serves the admin's certificate, and an operator logs in with the vault's password.
    context = ssl.create_default_context(cadata=deployment.settings["switchboard_console_cert"])
    with socket.create_connection(("127.0.0.1", deployment.console_port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        served = tls.getpeercert(binary_form=True)
    assert served == ssl.PEM_cert_to_DER_cert(deployment.settings["switchboard_console_cert"])
    bob = USERS[1]
    login = urllib.request.Request(
        f"https://127.0.0.1:{deployment.console_port}/api/login", method="POST",
        data=json.dumps({"username": "bob", "password": bob["password"]}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(login, timeout=10, context=context) as reply:
        assert json.load(reply)["role"] == "operator"


def test_a_call_to_the_deployed_box_is_answered_and_recorded(deployment: Deployment, box: Box,
                                                             tmp_path: Path) -> None:
    result = _call(deployment, tmp_path)
    assert result.successful == 1, result.output
    call = wait_until(lambda: next((c for c in _calls(box) if c["ended_at"]), None), "the call's record closed")
    assert (call["flow"], call["end_reason"]) == ("default", "flow-hangup")
    with wave.open(str(_in_box(box, call["recording_path"]))) as recording:
        assert recording.getnframes() > 8000  # more than a second of the call
    assert _in_box(box, call["recording_path"]).stat().st_uid == int(box.run("id", "-u", "switchboard").stdout)


def test_a_broken_flow_fails_the_play_and_the_old_flows_keep_serving(deployment: Deployment, box: Box,
                                                                      tmp_path: Path) -> None:
    live = box.root / "etc/switchboard/flows"
    before = live.readlink()
    (deployment.flows / "broken.yaml").write_text(BROKEN_FLOW)
    try:
        run = deployment.converge()
    finally:
        (deployment.flows / "broken.yaml").unlink()
    assert run.returncode != 0
    # The checker's own words, file:line:col, reach the admin.
    assert "broken.yaml:6:11: step 'nowhere' does not exist" in run.output, run.output[-5000:]
    assert live.readlink() == before
    assert not (live / "broken.yaml").exists()
    result = _call(deployment, tmp_path)
    assert result.successful == 1, result.output


def test_a_flow_edit_reloads_without_a_restart(deployment: Deployment, box: Box, tmp_path: Path) -> None:
    pid = _main_pid(box)
    versions_before = {c["flow_version"] for c in _calls(box) if c["flow"] == "default"}
    default = deployment.flows / "default.yaml"
    default.write_text(default.read_text().replace("Welcome to Switchboard.", "Welcome to the deployed box."))
    run = _ok(deployment.converge())
    assert not [t for t in run.changed_tasks() if "Restart" in t], run.changed_tasks()
    assert _main_pid(box) == pid
    reloaded = box.run("journalctl", "-u", "switchboard.service", "-g", "flows reloaded", "--no-pager", check=False)
    assert '"default"' in reloaded.stdout, reloaded.stdout
    result = _call(deployment, tmp_path)
    assert result.successful == 1, result.output
    latest = _calls(box)[0]
    assert latest["flow"] == "default" and latest["flow_version"] not in versions_before


def test_the_prune_and_backup_timers_do_what_they_say(box: Box) -> None:
    for timer in ("switchboard-prune.timer", "switchboard-backup.timer"):
        assert box.run("systemctl", "is-active", timer).stdout.strip() == "active"
    calls = _calls(box)
    recordings = [c["recording_path"] for c in calls if c["recording_path"]]
    assert recordings and all(_in_box(box, r).exists() for r in recordings)
    # The retention is under a second (switchboard_recordings_days): the last call, ended a moment
    # ago in the test before, must be older than that when the prune runs.
    newest = max(dt.datetime.fromisoformat(c["ended_at"]) for c in calls if c["ended_at"])
    time.sleep(max(0.0, 2 * RETENTION_S - (dt.datetime.now(dt.UTC) - newest).total_seconds()))

    box.run("systemctl", "start", "switchboard-prune.service")
    assert not [r for r in recordings if _in_box(box, r).exists()]
    assert all(c["recording_pruned_at"] for c in _calls(box) if c["recording_path"])

    # The two days before's backups are there (one backup a second at most: these are older).
    dest = box.root / "var/backups/switchboard"
    older = [dest / "switchboard-20200101T034000Z.sqlite3", dest / "switchboard-20200102T034000Z.sqlite3"]
    for path in older:
        box.run("cp", "/var/lib/switchboard/switchboard.db", f"/var/backups/switchboard/{path.name}")
    box.run("systemctl", "start", "switchboard-backup.service")
    backups = sorted(dest.iterdir())
    assert backups[0] == older[1] and len(backups) == 2, backups  # --keep 2: the oldest went
    with sqlite3.connect(f"file:{backups[-1]}?mode=ro", uri=True) as db:
        (count,) = db.execute("select count(*) from calls").fetchone()
    assert count == len(_calls(box))
    assert backups[-1].stat().st_mode & 0o077 == 0


def test_an_upgrade_drains_a_live_call_then_serves_on_the_new_release(deployment: Deployment, box: Box,
                                                                      tmp_path: Path) -> None:
    old = _release(box)
    deployment.write_settings(switchboard_source=str(_release_source(tmp_path, "0.1.1")))
    held: dict[str, SippResult] = {}
    holder_dir = tmp_path / "held"
    holder_dir.mkdir()

    def hold_a_call() -> None:
        scenario = caller_scenario(holder_dir, None, wait_ms=0, bye_timeout_ms=90000)
        held["result"] = run_sipp(scenario, deployment.sip_port, holder_dir, service="200", timeout=120)

    holder = threading.Thread(target=hold_a_call)
    refused: dict[str, SippResult] = {}
    held_live_at_refusal: list[bool] = []

    def on_line(line: str) -> None:
        # Once the new release is installed (the slow part), a call goes live on the old one.
        if line.startswith("TASK [switchboard : Render appliance.yaml") and not holder.is_alive():
            holder.start()
            wait_until(lambda: _healthz(deployment)["calls_active"] >= 1, "the held call to be live", 30)
        # While the old release drains, a new call is turned away and the held one goes on.
        if line.startswith("TASK [switchboard : Drain calls on the release in service]"):
            wait_until(lambda: _healthz(deployment)["draining"], "the appliance to drain", 30)
            workdir = tmp_path / "refused"
            workdir.mkdir()
            refused["result"] = run_sipp(refused_scenario(workdir, 503, r"Retry-After: *[0-9]+"),
                                         deployment.sip_port, workdir)
            held_live_at_refusal.append(holder.is_alive())

    run = deployment.converge(on_line=on_line)
    holder.join(120)
    assert run.returncode == 0, run.output[-8000:]
    assert refused["result"].successful == 1, refused["result"].output
    assert held_live_at_refusal == [True]
    assert held["result"].successful == 1, held["result"].output
    held_call = next(c for c in _calls(box) if c["flow"] == "hold")
    assert held_call["end_reason"] == "flow-hangup"
    new = _release(box)
    assert new.startswith("0.1.1-") and new != old
    assert _healthz(deployment)["draining"] is False
    result = _call(deployment, tmp_path / "after")
    assert result.successful == 1, result.output
    running = box.run("cat", f"/proc/{_main_pid(box)}/cmdline").stdout
    assert f"/releases/{new}/" in running


def test_a_broken_release_is_rolled_back(deployment: Deployment, box: Box, tmp_path: Path) -> None:
    good = _release(box)
    deployment.write_settings(switchboard_source=str(_release_source(tmp_path, "0.1.2", broken=True)))
    run = deployment.converge()
    assert run.returncode != 0
    assert f"rolled back to {good}" in run.output, run.output[-5000:]
    assert _release(box) == good
    # Installed beside the good one, kept for the admin to look at.
    assert list((box.root / "opt/switchboard/releases").glob("0.1.2-*"))
    result = _call(deployment, tmp_path)
    assert result.successful == 1, result.output
    running = box.run("cat", f"/proc/{_main_pid(box)}/cmdline").stdout
    assert f"/releases/{good}/" in running


def test_the_optional_firewall_rule_set_loads(deployment: Deployment, box: Box) -> None:
    """The role's nftables table, rendered from the same settings, loads and says what it should.

    Loaded in a network namespace of its own inside the box: the box shares this machine's
    network, and a drop policy there would be this machine's.
    """
    rendered = deployment.ansible(
        "ansible", "switchboard", "-i", "inventory.ini", "-m", "ansible.builtin.template",
        "-a", f"src={ROLE}/templates/switchboard.nft.j2 dest=/root/switchboard.nft mode=0600",
        "-e", f"@{ROLE}/defaults/main.yml", "-e", f"@{ROLE}/vars/main.yml", "-e", "@group_vars/switchboard.yml",
        "-e", '{"switchboard_nftables_lan": ["192.168.7.0/24"]}')
    assert rendered.returncode == 0, rendered.output
    box.run("sh", "-c", "apt-get update -qq && apt-get install -y -qq --no-install-recommends nftables", timeout=300)
    # Twice: loading the file again replaces the table rather than adding to it.
    listing = box.run("unshare", "--net", "sh", "-c", "nft -f /root/switchboard.nft && nft -f /root/switchboard.nft "
                      "&& nft list table inet switchboard").stdout
    rtp_end = deployment.rtp_base + 2 * 40 - 1
    assert "policy drop" in listing
    assert re.search(rf"ip saddr \{{ 127\.0\.0\.0/8, 192\.0\.2\.0/24 \}} udp dport {deployment.sip_port} accept",
                     listing), listing
    assert f"udp dport {deployment.rtp_base}-{rtp_end} accept" in listing
    lan = re.search(r"ip saddr 192\.168\.7\.0/24 tcp dport \{ (\d+), (\d+) \} accept", listing)
    assert lan and {int(p) for p in lan.groups()} == {deployment.http_port, deployment.console_port}, listing
    assert listing.count("chain input") == 1


def test_the_rtp_ports_are_kept_from_the_kernels_ephemeral_ports(deployment: Deployment, box: Box) -> None:
    """No outgoing socket on the host may take a SIP worker's RTP port before pjsua binds it.

    Written only: the box shares this machine's network, whose settings are read-only inside it
    (the role applies the file where it may; systemd-sysctl at every boot).
    """
    rtp_end = deployment.rtp_base + 2 * 40 - 1
    conf = box.run("cat", "/etc/sysctl.d/60-switchboard.conf").stdout
    assert f"\nnet.ipv4.ip_local_reserved_ports = {deployment.rtp_base}-{rtp_end}\n" in conf, conf
