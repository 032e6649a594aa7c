"""A SIP worker takes calls from the edge only, and believes only the edge's headers.

The workers listen on loopback, so anything on the box can send to them. The edge is the
one that checks the source against the trunks and writes X-Switchboard-Trunk and
X-Switchboard-Source; an INVITE that did not come through it must not reach the hub.
"""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from sip.endpoint import header
from tests.support.appliance import ApplianceProcess
from tests.support.sipp.process import call, run_sipp
from tests.support.sipp.proxy_scenarios import uac_call, write_scenario
from tests.support.sipp.scenarios import forged_invite_scenario

pytestmark = pytest.mark.sip

TRUNKS = [
    {"name": "lan", "sources": ["127.0.0.0/8"], "numbers": ["100"]},
    {"name": "vip", "sources": ["198.51.100.0/24"], "numbers": ["900"]},
]


def _responses(app: ApplianceProcess) -> dict[str, float]:
    """The hub's count of final answers to offers, by code, from its /metrics."""
    text = app.get("/metrics").decode()
    return {code: float(value) for code, value in
            re.findall(r'^switchboard_sip_responses_total\{code="(\d+)"\} (\S+)$', text, flags=re.M)}


def test_an_invite_sent_straight_to_a_worker_is_refused_and_never_offered(appliance_factory, tmp_path: Path) -> None:
    app = appliance_factory(workers=1, numbers={"100": "default", "900": "default"}, extra={"trunks": TRUNKS})
    forged = forged_invite_scenario(tmp_path, trunk="vip", source="198.51.100.7", code=403)

    direct = run_sipp(forged, app.worker_base, tmp_path, service="900", timeout=20)

    assert direct.successful == 1, direct.output
    assert app.calls() == []
    assert _responses(app) == {}, "the hub was asked about a call that skipped the edge"

    # The same INVITE through the edge: the edge names the trunk (lan, whose numbers do not
    # include 900) whatever the caller wrote, and the hub refuses the number.
    through_edge = run_sipp(forged_invite_scenario(tmp_path, trunk="vip", source="198.51.100.7", code=404),
                            app.sip_port, tmp_path, service="900", timeout=20)

    assert through_edge.successful == 1, through_edge.output
    assert app.calls() == []
    assert _responses(app) == {"404": 1.0}


def test_header_lines_in_the_body_are_not_headers() -> None:
    invite = (
        "INVITE sip:900@127.0.0.1:5100 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-edge\r\n"
        "x-switchboard-trunk:  lan \r\n"
        "Content-Type: application/sdp\r\n"
        "Content-Length: 80\r\n"
        "\r\n"
        "v=0\r\n"
        "X-Switchboard-Trunk: vip\r\n"
        "X-Switchboard-Source: 198.51.100.7\r\n"
    )

    assert header(invite, "X-Switchboard-Trunk") == "lan"
    assert header(invite, "X-Switchboard-Source") is None
    assert header(invite.replace("\r\n", "\n"), "X-Switchboard-Source") is None


def _lan_address() -> str:
    """An IPv4 address of this box other than loopback, as a LAN caller would reach it."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                         capture_output=True, text=True, check=True).stdout
    found = re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", out)
    if not found:
        pytest.skip("this box has no non-loopback IPv4 address to call from")
    return found[0]


async def test_a_wildcard_edge_relays_from_the_address_the_call_came_to(tmp_path: Path) -> None:
    # The shipped default: the edge on 0.0.0.0 with no media_address to advertise binds each
    # address of the box and relays to the workers from the one the INVITE arrived on
    # (measured: <LAN address>:<edge port> for a caller on the LAN, 127.0.0.1:<edge port> for
    # one on loopback), so "from the edge" cannot mean one fixed address there.
    lan = _lan_address()
    root = tmp_path / "appliance"
    root.mkdir()
    app = ApplianceProcess(root, workers=1, trunk_sources=["127.0.0.0/8", f"{lan}/32"])
    config = yaml.safe_load(app.config_path.read_text())
    config["sip"]["listen_host"] = "0.0.0.0"
    del config["sip"]["media_address"]  # with one, the edge binds a single wildcard socket instead
    app.config_path.write_text(yaml.safe_dump(config))
    try:
        app.start()
        scenario = write_scenario(tmp_path, "lan_caller", uac_call(hold_ms=1000))
        await call(tmp_path, "lan_caller", scenario, f"{lan}:{app.sip_port}", extra=["-s", "100", "-i", lan])
        (closed,) = app.wait_calls_closed(1)
        detail = app.call(closed["id"])
    finally:
        app.stop()

    assert detail["end_reason"] == "caller-hangup" and detail["answered_at"], detail
    (offered,) = [e["data"] for e in detail["events"] if e["kind"] == "offered"]
    assert offered["source"] == lan, offered


def _invite(worker_port: int, local_port: int, extra: str = "") -> bytes:
    body = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
    return (
        f"INVITE sip:100@127.0.0.1:{worker_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-impostor;rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:mallory@127.0.0.1:{local_port}>;tag=impostor\r\n"
        f"To: <sip:100@127.0.0.1:{worker_port}>\r\n"
        "Call-ID: impostor-1@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:mallory@127.0.0.1:{local_port}>\r\n"
        "X-Switchboard-Trunk: test\r\nX-Switchboard-Source: 127.0.0.1\r\n"
        f"{extra}"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def test_a_local_impostor_on_the_edges_own_port_is_refused(appliance_factory) -> None:
    # Kamailio binds its UDP socket with SO_REUSEADDR, so another process on the box can bind the
    # edge's own address and port and send from it: the source check alone would pass. It does not
    # know the edge's key (in the 0600 config and the workers' environments only).
    app = appliance_factory(workers=1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as impostor:
        impostor.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        impostor.bind(("127.0.0.1", app.sip_port))
        impostor.settimeout(5)
        for extra in ("", "X-Switchboard-Edge: " + "0" * 64 + "\r\n"):
            impostor.sendto(_invite(app.worker_base, app.sip_port, extra), ("127.0.0.1", app.worker_base))
            status = b"SIP/2.0 100"
            while status[8:9] == b"1":  # provisional answers (100, 180) may come first
                status, _ = impostor.recvfrom(65536)
            assert status.startswith(b"SIP/2.0 403"), status[:40]
    assert app.calls() == []
    assert _responses(app) == {}
