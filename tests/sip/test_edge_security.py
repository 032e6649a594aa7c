"""The SIP edge is no relay, and trunks with credentials prove them: real Kamailio, sipp peers.

A sipp UAS on another loopback port stands for "a host of the attacker's choosing"; 127.0.0.2
stands for a peer outside every trunk (the far end of a bridge transfer at a carrier or PBX).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from appliance.config import Config, TrunkConfig
from appliance.core.errors import ConfigError
from sip.edge_config import (
    EdgeSettings,
    EdgeTrunk,
    render_config,
    render_dispatcher,
    route_signature,
)
from sip.gateway import Gateway
from tests.support.edge import StackFactory
from tests.support.ports import free_port_block
from tests.support.sipp.process import Sipp, start_uas
from tests.support.sipp.proxy_scenarios import (
    UAS_ANSWER_THEN_HANG_UP,
    uac_call,
    uac_call_via_proxy,
    uac_in_dialog,
    uac_rejected,
    uac_via_proxy_rejected,
    uac_with_credentials,
)

pytestmark = pytest.mark.sip

ELSEWHERE = "127.0.0.1"  # the attacker's chosen host: a sipp on its own port
OUTSIDE = "127.0.0.2"  # a peer in no trunk
EDGE_ROUTE = "<sip:[remote_ip]:[remote_port];lr>"


async def _elsewhere(tmp_path: Path, name: str = "elsewhere", host: str = ELSEWHERE,
                     scenario: str | None = None) -> tuple[Sipp, int]:
    port = free_port_block(1)
    return await start_uas(tmp_path, name, port, scenario, host=host), port


async def _settle() -> None:
    # A relayed request would have reached the other sipp by now: loopback takes microseconds.
    await asyncio.sleep(0.5)


async def test_a_forged_in_dialog_invite_from_a_trunk_is_not_relayed(stack: StackFactory, tmp_path: Path) -> None:
    gateway = await stack(workers=1)
    elsewhere, port = await _elsewhere(tmp_path)
    try:
        await gateway.call("forged-invite", uac_in_dialog("INVITE", f"sip:victim@{ELSEWHERE}:{port}", EDGE_ROUTE, 403))
        await _settle()
        assert elsewhere.received() == [], "the edge relayed an in-dialog INVITE to a host of the sender's choosing"
    finally:
        await elsewhere.stop()
    assert gateway.invites() == [0]
    refused = r"edge: in-dialog INVITE from 127\.0\.0\.1:\d+ refused: no route the edge signed"
    assert re.search(refused, gateway.log()), gateway.log()


async def test_a_forged_in_dialog_message_from_a_trunk_is_not_relayed(stack: StackFactory, tmp_path: Path) -> None:
    gateway = await stack(workers=1)
    elsewhere, port = await _elsewhere(tmp_path)
    try:
        # A forged signature is no better than none.
        route = "<sip:[remote_ip]:[remote_port];lr;ftag=abc;sb=" + "0" * 32 + ">"
        await gateway.call("forged-message", uac_in_dialog("MESSAGE", f"sip:victim@{ELSEWHERE}:{port}", route, 403))
        await _settle()
        assert elsewhere.received() == [], "the edge relayed an in-dialog MESSAGE to a host of the sender's choosing"
    finally:
        await elsewhere.stop()


async def test_a_signed_route_still_leads_only_to_a_worker(stack: StackFactory, tmp_path: Path) -> None:
    # A caller knows the signature of its own call's route; it must not serve to reach anyone else.
    gateway = await stack(workers=1)
    elsewhere, port = await _elsewhere(tmp_path)
    signature = route_signature(gateway.edge.settings.secret, "replayed-call", "caller-tag")
    route = f"<sip:[remote_ip]:[remote_port];lr;ftag=caller-tag;sb={signature}>"
    try:
        await gateway.call("replayed", uac_in_dialog("INVITE", f"sip:victim@{ELSEWHERE}:{port}", route, 403,
                                                     from_tag="caller-tag"), extra=["-cid_str", "replayed-call"])
        await _settle()
        assert elsewhere.received() == []
    finally:
        await elsewhere.stop()
    # The signature held; the next hop gave it away.
    log = gateway.log()
    assert "edge: in-dialog INVITE from 127.0.0.1" in log and "refused: the next hop is no worker" in log


async def test_a_worker_cannot_use_a_route_the_edge_did_not_sign(stack: StackFactory, tmp_path: Path) -> None:
    gateway = await stack(workers=0, spare=1)
    (worker_port,) = gateway.spare
    elsewhere, port = await _elsewhere(tmp_path)
    try:
        route = "<sip:[remote_ip]:[remote_port];lr;ftag=abc;sb=" + "f" * 32 + ">"
        await gateway.call("worker-forged", uac_in_dialog("MESSAGE", f"sip:someone@{ELSEWHERE}:{port}", route, 403),
                           extra=["-p", str(worker_port), "-aa"])
        await _settle()
        assert elsewhere.received() == []
    finally:
        await elsewhere.stop()


async def test_a_worker_cannot_call_a_host_that_is_not_configured(stack: StackFactory, tmp_path: Path) -> None:
    gateway = await stack(workers=0, spare=1)
    (worker_port,) = gateway.spare
    elsewhere, port = await _elsewhere(tmp_path)
    try:
        await gateway.call("to-elsewhere", uac_via_proxy_rejected("INVITE", f"sip:+15550100@{ELSEWHERE}:{port}", 403),
                           extra=["-p", str(worker_port), "-aa"])
        await _settle()
        assert elsewhere.received() == [], "a worker's INVITE went to a host nobody configured"
    finally:
        await elsewhere.stop()


async def test_a_worker_cannot_send_out_of_dialog_requests(stack: StackFactory, tmp_path: Path) -> None:
    gateway = await stack(workers=0, spare=1)
    (worker_port,) = gateway.spare
    elsewhere, port = await _elsewhere(tmp_path)
    try:
        await gateway.call("message-out", uac_via_proxy_rejected("MESSAGE", f"sip:someone@{ELSEWHERE}:{port}", 405),
                           extra=["-p", str(worker_port), "-aa"])
        await _settle()
        assert elsewhere.received() == []
    finally:
        await elsewhere.stop()


async def test_a_bridge_call_reaches_a_configured_host_outside_every_trunk_which_can_hang_up(
    stack: StackFactory, tmp_path: Path
) -> None:
    # The destination is in no trunk: its BYE is accepted for carrying the edge's own signed route.
    desk_port = free_port_block(1)
    gateway = await stack(workers=0, spare=1, trunks=[EdgeTrunk("carrier-a", ["127.0.0.1/32"])],
                          outbound_hosts=[f"{OUTSIDE}:{desk_port}"])
    (worker_port,) = gateway.spare
    desk = await start_uas(tmp_path, "desk", desk_port, UAS_ANSWER_THEN_HANG_UP, host=OUTSIDE)
    gateway.started.append(desk)

    await gateway.call("bridge", uac_call_via_proxy(f"sip:desk@{OUTSIDE}:{desk_port}"),
                       extra=["-p", str(worker_port), "-aa"])

    # The worker's sipp got the desk's BYE and answered it; the desk saw that 200.
    answers = [m.split("\n", 1)[0] for m in desk.received() if m.startswith("SIP/2.0")]
    assert answers == ["SIP/2.0 200 OK"], desk.report()
    (invite,) = desk.requests("INVITE")
    signed = re.search(r"^Record-Route: <sip:127\.0\.0\.1:\d+;lr;ftag=([^;>]+);sb=([0-9a-f]{32})>", invite, flags=re.M)
    assert signed, invite
    call_id = re.search(r"^Call-ID: *(\S+)", invite, flags=re.M).group(1)  # type: ignore[union-attr]
    # Kamailio's script and route_signature() agree.
    assert signed.group(2) == route_signature(gateway.edge.settings.secret, call_id, signed.group(1))
    assert "Route:" not in invite.replace("Record-Route:", ""), "the worker's Route to the edge went on to the far end"


async def test_a_trunk_with_credentials_challenges_an_invite_without_them(stack: StackFactory) -> None:
    gateway = await stack(workers=1, trunks=[EdgeTrunk("carrier-a", ["127.0.0.0/8"], "trunkuser", "s3cret")])

    await gateway.call("no-credentials",
                       uac_rejected(407, "Proxy-Authenticate", r'^ *Digest .*realm="switchboard".*nonce="'))
    assert gateway.invites() == [0]

    await gateway.call("source-and-credentials", uac_with_credentials(), extra=["-au", "trunkuser", "-ap", "s3cret"])
    assert gateway.invites() == [1]
    # The password and the route secret are in the config alone, which only this user reads.
    settings = gateway.edge.settings
    assert stat.S_IMODE(os.stat(settings.config_path).st_mode) == 0o600
    for other in (settings.dispatcher_path, settings.log_path):
        assert "s3cret" not in other.read_text() and settings.secret not in other.read_text()
    assert "s3cret" not in settings.config_path.read_text(), "the password is written hex-encoded"


async def test_the_right_credentials_reach_a_worker_without_them(stack: StackFactory) -> None:
    # No sources: any address that authenticates is this trunk.
    gateway = await stack(workers=1, trunks=[EdgeTrunk("carrier-a", [], "trunkuser", 'pa$$ "word"\\')])

    await gateway.call("credentials", uac_with_credentials(), extra=["-au", "trunkuser", "-ap", 'pa$$ "word"\\'])

    (invite,) = gateway.workers[0].requests("INVITE")
    headers = invite.split("\n\n", 1)[0]
    assert re.findall(r"^X-Switchboard-Trunk:.*$", headers, flags=re.M) == ["X-Switchboard-Trunk: carrier-a"]
    assert "Authorization" not in headers, "the trunk's credentials went on to the worker"


async def test_a_wrong_password_is_refused(stack: StackFactory) -> None:
    gateway = await stack(workers=1, trunks=[EdgeTrunk("carrier-a", [], "trunkuser", "s3cret")])

    await gateway.call("wrong-password", uac_with_credentials(403), extra=["-au", "trunkuser", "-ap", "guess"])
    await gateway.call("wrong-user", uac_with_credentials(403), extra=["-au", "someone", "-ap", "s3cret"])

    assert gateway.invites() == [0]
    assert "edge: wrong credentials" in gateway.log(), gateway.log()


async def test_a_trunk_with_credentials_and_sources_needs_both(stack: StackFactory) -> None:
    gateway = await stack(workers=1, trunks=[EdgeTrunk("carrier-a", ["10.0.0.0/8"], "trunkuser", "s3cret")])

    # From outside the trunk's networks the INVITE is refused outright: no challenge to answer.
    await gateway.call("wrong-source", uac_rejected(403))

    assert gateway.invites() == [0]


async def test_a_trunk_without_credentials_is_still_admitted_by_source(stack: StackFactory) -> None:
    gateway = await stack(workers=1, trunks=[EdgeTrunk("carrier-b", [], "trunkuser", "s3cret"),
                                             EdgeTrunk("carrier-a", ["127.0.0.0/8"])])

    await gateway.call("by-source", uac_call())

    assert gateway.invites() == [1]


def test_no_username_or_password_can_inject_config_syntax(tmp_path: Path) -> None:
    password = '"; exit; }\n#!define X 1' .replace("\n", "") + ' $ru \\ {{ROUTE_SECRET}} ' + "'"
    settings = EdgeSettings("127.0.0.1", 5060, [5100], 1, [EdgeTrunk("carrier-a", [], "o'brien+1@carrier", password)],
                            run_dir=tmp_path)
    (tmp_path / "dispatcher.list").write_text(render_dispatcher(settings))
    config = render_config(settings)
    (tmp_path / "kamailio.cfg").write_text(config)

    check = subprocess.run(["kamailio", "-c", "-f", str(tmp_path / "kamailio.cfg")], capture_output=True, text=True)

    assert check.returncode == 0, check.stdout + check.stderr
    assert password not in config and password.encode().hex() in config
    for bad in ('us"er', "us\\er", "us\ner", "", "us\x00er"):
        with pytest.raises(ValueError):
            render_config(EdgeSettings("127.0.0.1", 5060, [5100], 1, [EdgeTrunk("t", [], bad, "pw")]))
    for bad in ("pw\n", "p\rw", "p\x00w", ""):
        with pytest.raises(ValueError):
            render_config(EdgeSettings("127.0.0.1", 5060, [5100], 1, [EdgeTrunk("t", [], "user", bad)]))


def _private(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_password_file_must_be_private_and_absolute(tmp_path: Path) -> None:
    good = _private(tmp_path / "good", "s3cret\n", 0o600)
    assert TrunkConfig(name="t", username="user", password_file=good).password == "s3cret"

    shared = _private(tmp_path / "shared", "s3cret\n", 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        _ = TrunkConfig(name="t", username="user", password_file=shared).password
    with pytest.raises(ConfigError, match="chmod 600"):
        Gateway(Config.model_validate({"trunks": [{"name": "t", "username": "user", "password_file": str(shared)}]}),
                worker_token=lambda name: "token")
    with pytest.raises(ConfigError, match="not both"):
        _ = TrunkConfig(name="t", username="user", password_file=good, password_env="TRUNK_PASSWORD").password
    with pytest.raises(ConfigError, match="cannot read"):
        _ = TrunkConfig(name="t", username="user", password_file=tmp_path / "missing").password
    with pytest.raises(ValidationError, match="absolute"):
        TrunkConfig(name="t", username="user", password_file=Path("password"))


def test_the_gateway_gives_the_edge_the_configured_hosts_and_credentials(tmp_path: Path) -> None:
    password = _private(tmp_path / "password", "s3cret", 0o600)
    config = Config.model_validate({
        "trunks": [{"name": "carrier", "username": "trunkuser", "password_file": str(password)}],
        "transfers": {"outbound_proxy": "sip:Termination.Example.com",
                      "allowed": ["+1555*", "sip:desk@127.0.0.1:5099", "sip:*@pbx.example:5080",
                                  "sip:ops@PBX.example:5080"]},
    })

    settings = Gateway(config, worker_token=lambda name: "token").edge.settings

    assert settings.outbound_hosts == ["termination.example.com:5060", "127.0.0.1:5099", "pbx.example:5080"]
    assert settings.trunks == [EdgeTrunk("carrier", [], "trunkuser", "s3cret")]
    assert "s3cret" not in repr(settings) and settings.secret not in repr(settings), "secrets stay out of tracebacks"


async def test_failed_attempts_from_anywhere_are_still_throttled(stack: StackFactory) -> None:
    # A trunk open to any source that authenticates: the sources are strangers to pike all the same.
    gateway = await stack(workers=1, trunks=[EdgeTrunk("carrier-a", [], "trunkuser", "s3cret")], flood_requests=10)
    port = gateway.edge.settings.port

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.3", 0))
        sock.settimeout(0.3)
        source_port = sock.getsockname()[1]
        for i in range(100):
            sock.sendto((
                f"INVITE sip:100@{ELSEWHERE}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.3:{source_port};branch=z9hG4bK-guess{i}\r\n"
                f"From: <sip:guess@127.0.0.3>;tag={i}\r\nTo: <sip:100@{ELSEWHERE}>\r\nCall-ID: guess-{i}\r\n"
                'Proxy-Authorization: Digest username="trunkuser", realm="switchboard", nonce="x", '
                f'uri="sip:100@{ELSEWHERE}", response="{i:032x}"\r\n'
                "CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode(), (ELSEWHERE, port))
            await asyncio.sleep(0.002)
        refused = 0
        with contextlib.suppress(TimeoutError):
            while True:
                refused += sock.recv(4096).startswith(b"SIP/2.0 403")

    assert 0 < refused < 50, f"{refused} of 100 wrong guesses answered"
    assert gateway.invites() == [0]
