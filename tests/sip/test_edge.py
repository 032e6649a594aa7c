"""The SIP edge with real processes on 127.0.0.1: Kamailio in front, sipp as workers and callers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from sip.edge import Edge, EdgeControlError, EdgeStartError
from sip.edge_config import EdgeSettings, EdgeTrunk, render_config, render_dispatcher
from tests.support.edge import LOCAL_TRUNK, StackFactory
from tests.support.sipp.process import HOST, options_status, start_uas
from tests.support.sipp.proxy_scenarios import (
    UAS_ANSWER_THEN_HANG_UP,
    UAS_RING_UNTIL_CANCEL,
    uac_call,
    uac_call_hung_up_by_callee,
    uac_cancel,
    uac_rejected,
    uas_reject,
)

pytestmark = pytest.mark.sip


async def test_calls_are_spread_over_the_workers_and_all_succeed(stack: StackFactory) -> None:
    gateway = await stack(workers=3, calls_per_worker=2)

    # Six calls up at once: call load distribution must give each worker exactly two.
    await gateway.call("six", uac_call(hold_ms=1500), calls=6, rate=50)

    assert gateway.invites() == [2, 2, 2]
    assert all(worker.requests("BYE") for worker in gateway.workers), "BYE went through the edge"
    assert [load for _, load in gateway.dispatcher().values()] == [0, 0, 0]


async def test_a_full_pool_answers_503_with_retry_after(stack: StackFactory) -> None:
    gateway = await stack(workers=2, calls_per_worker=1, retry_after_s=7)

    held = await gateway.caller("held", uac_call(hold_ms=4000), calls=2, rate=50)
    await gateway.wait_for(
        "both calls up", lambda: all(len(w.requests("ACK")) == 1 for w in gateway.workers), timeout=5
    )
    await gateway.call("overflow", uac_rejected(503, "Retry-After", "^ *7$"))
    assert gateway.invites() == [1, 1], "the overflow call reached no worker"

    assert await held.wait(15) == 0, held.report()
    # The hang-ups gave both slots back: two calls at once fit again.
    await gateway.call("after", uac_call(hold_ms=500), calls=2, rate=50)
    assert gateway.invites() == [2, 2]


async def test_a_source_in_no_trunk_gets_403(stack: StackFactory) -> None:
    gateway = await stack(workers=1, trunks=[EdgeTrunk("carrier-b", ["10.99.0.0/16"])])

    await gateway.call("stranger", uac_rejected(403))

    assert gateway.invites() == [0]


async def test_a_killed_worker_is_marked_down_and_calls_go_to_the_others(stack: StackFactory) -> None:
    gateway = await stack(workers=3, calls_per_worker=2)
    dead = gateway.workers[0]
    dead_port = gateway.port(dead)

    await dead.kill()
    took = await gateway.wait_for(
        "dead worker marked inactive", lambda: gateway.dispatcher()[dead_port][0].startswith("I"), timeout=8
    )
    assert took < 6, f"marking a dead worker down took {took:.1f} s"

    await gateway.call("survivors", uac_call(hold_ms=1000), calls=4, rate=50)
    assert gateway.invites()[1:] == [2, 2]

    # Back on the same port, it is probed up again and takes calls.
    revived = await start_uas(gateway.directory, "worker0-revived", dead_port)
    gateway.started.append(revived)
    gateway.workers[0] = revived
    await gateway.wait_for(
        "revived worker active", lambda: gateway.dispatcher()[dead_port][0].startswith("A"), timeout=6
    )
    await gateway.call("all-three", uac_call(hold_ms=1000), calls=6, rate=50)
    assert gateway.invites() == [2, 4, 4]


def _answers(port: int) -> bool:
    try:
        return options_status(port, timeout=0.2).endswith("200 OK")
    except OSError:  # no answer yet
        return False


async def test_announced_workers_take_calls_only_once_the_appliance_says_so(stack: StackFactory) -> None:
    # The spare port stands for a worker not started yet: nothing answers there, not even pings.
    gateway = await stack(workers=1, spare=1, calls_per_worker=2, announced=True)
    worker = gateway.port(gateway.workers[0])
    (unborn,) = gateway.spare
    assert gateway.dispatcher()[unborn][0] == "IP"  # inactive from the start, and probed

    await gateway.edge.worker_ready(worker, True)
    assert gateway.dispatcher()[worker][0].startswith("A")
    await gateway.call("announced", uac_call(hold_ms=500), calls=2, rate=50)
    assert gateway.invites() == [2]
    assert gateway.dispatcher()[unborn][0] == "IP"

    await gateway.edge.worker_ready(worker, False)
    assert gateway.dispatcher()[worker][0].startswith("I")
    await gateway.edge.worker_ready(worker, True)
    # A restarted edge starts from what it was told: the worker active, the other not.
    killed = gateway.edge.pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    await gateway.wait_for("a new edge process answering", lambda: gateway.edge.running
                           and gateway.edge.pid != killed and _answers(gateway.edge.settings.port), timeout=10)
    assert gateway.dispatcher()[worker][0].startswith("A") and gateway.dispatcher()[unborn][0] == "IP"
    await gateway.call("after", uac_call(hold_ms=500))
    assert gateway.invites() == [3]


async def test_malformed_datagrams_do_not_kill_the_edge(stack: StackFactory) -> None:
    gateway = await stack(workers=1)
    port = gateway.edge.settings.port

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(2)
        invite = (
            f"INVITE sip:100@{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{sock.getsockname()[1]};branch=z9hG4bK-bad1\r\n"
            "From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\n"
            "Call-ID: malformed-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        )
        garbage = [
            os.urandom(1200),
            b"\x00" * 64,
            b"SIP/2.0\r\n\r\n",
            invite.encode()[: len(invite) // 2],  # cut mid-header
            (invite + "Content-Length: 500\r\n\r\nv=0\r\n").encode(),  # body shorter than declared
            (invite + "CSeq: x INVITE\r\nContent-Length: 0\r\n\r\n").encode(),
            (invite.replace("CSeq: 1", "CSeq: 99999999999999999999") + "Content-Length: 0\r\n\r\n").encode(),
            ("OPTIONS sip:" + "9" * 5000 + f"@{HOST} SIP/2.0\r\n\r\n").encode(),
        ]
        for datagram in garbage:
            sock.sendto(datagram, (HOST, port))
        # Well formed but a 60 KB header: refused, since a worker would drop it unanswered.
        sock.sendto((invite + "X-Padding: " + "a" * 60_000 + "\r\nContent-Length: 0\r\n\r\n").encode(), (HOST, port))
        replies: list[bytes] = []
        with contextlib.suppress(socket.timeout):
            while not any(reply.startswith(b"SIP/2.0 513") for reply in replies):
                replies.append(sock.recv(65536))

    assert any(reply.startswith(b"SIP/2.0 513") for reply in replies), replies
    assert gateway.edge.running, gateway.log()
    await gateway.call("after-garbage", uac_call())
    assert gateway.invites() == [1], "no malformed INVITE reached the worker"
    assert gateway.edge.running


async def test_the_worker_is_told_the_trunk_and_source(stack: StackFactory) -> None:
    gateway = await stack(workers=1, trunks=[EdgeTrunk("elsewhere", ["10.0.0.0/8"]), LOCAL_TRUNK])

    await gateway.call("one", uac_call())

    (invite,) = gateway.workers[0].requests("INVITE")
    headers = invite.split("\n\n", 1)[0]
    assert re.findall(r"^X-Switchboard-Trunk:.*$", headers, flags=re.M) == ["X-Switchboard-Trunk: carrier-a"]
    assert re.findall(r"^X-Switchboard-Source:.*$", headers, flags=re.M) == ["X-Switchboard-Source: 127.0.0.1"]
    assert f"Record-Route: <sip:{HOST}:{gateway.edge.settings.port};lr" in headers
    # RTP bypasses the edge: the caller's SDP arrives untouched.
    assert "m=audio" in invite and "c=IN IP4 127.0.0.1" in invite


async def test_a_worker_failure_moves_the_call_to_the_next_worker(stack: StackFactory) -> None:
    gateway = await stack(workers=2, calls_per_worker=1, scenarios=[uas_reject("500 Server Error"), None])

    await gateway.call("failover", uac_call(hold_ms=300))
    await gateway.call("failover-again", uac_call(hold_ms=300))

    assert gateway.invites() == [2, 2]
    # The load moved with the call and left with the BYE: no counter leaked on either worker.
    assert [load for _, load in gateway.dispatcher().values()] == [0, 0]


async def test_when_every_worker_fails_the_caller_gets_503_and_no_load_leaks(stack: StackFactory) -> None:
    gateway = await stack(workers=2, calls_per_worker=1, scenarios=[uas_reject(), uas_reject()])

    await gateway.call("refused", uac_rejected(503, "Retry-After", "^ *5$"))

    assert gateway.invites() == [1, 1]
    assert [load for _, load in gateway.dispatcher().values()] == [0, 0]


async def test_a_flooding_stranger_is_dropped_while_a_trunk_is_served(stack: StackFactory) -> None:
    gateway = await stack(workers=1, trunks=[EdgeTrunk("carrier-a", ["127.0.0.1/32"])], flood_requests=10)
    port = gateway.edge.settings.port

    def options(i: int, source_port: int) -> bytes:
        return (
            f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.3:{source_port};branch=z9hG4bK-flood{i}\r\n"
            f"From: <sip:flood@127.0.0.3>;tag={i}\r\nTo: <sip:{HOST}>\r\nCall-ID: flood-{i}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.3", 0))
        sock.settimeout(0.3)
        answered = 0
        for i in range(200):
            sock.sendto(options(i, sock.getsockname()[1]), (HOST, port))
            await asyncio.sleep(0.002)
        try:
            while True:
                sock.recv(4096)
                answered += 1
        except TimeoutError:
            pass

    assert 0 < answered < 100, f"{answered} of 200 flood requests answered"
    await gateway.call("trunk-during-flood", uac_call())


async def test_a_caller_can_cancel_a_ringing_call(stack: StackFactory) -> None:
    gateway = await stack(workers=1, calls_per_worker=1, scenarios=[UAS_RING_UNTIL_CANCEL])

    await gateway.call("cancel", uac_cancel())

    assert len(gateway.workers[0].requests("CANCEL")) == 1
    assert len(gateway.workers[0].requests("ACK")) == 1, "the ACK to the 487 is hop-by-hop, sent by the edge"
    assert [load for _, load in gateway.dispatcher().values()] == [0]


async def test_a_worker_can_hang_up_through_the_edge(stack: StackFactory) -> None:
    gateway = await stack(workers=1, calls_per_worker=1, scenarios=[UAS_ANSWER_THEN_HANG_UP])

    caller = await gateway.call("hung-up", uac_call_hung_up_by_callee())

    (bye,) = caller.requests("BYE")
    assert "Record-Route" not in bye and "Route:" not in bye, "the edge consumed its own Route"
    assert [load for _, load in gateway.dispatcher().values()] == [0]
    # The slot is free again.
    await gateway.call("next", uac_call())


async def test_a_wildcard_edge_without_advertise_serves_loopback_calls(stack: StackFactory) -> None:
    gateway = await stack(workers=1, listen_host="0.0.0.0")

    await gateway.call("wildcard", uac_call())

    (invite,) = gateway.workers[0].requests("INVITE")
    assert f"Record-Route: <sip:{HOST}:{gateway.edge.settings.port};lr" in invite
    assert "0.0.0.0" not in invite


async def test_an_edge_that_cannot_start_says_why(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, 0))
        port = taken.getsockname()[1]
        edge = Edge(EdgeSettings(HOST, port, [port + 1 if port < 65535 else port - 1], 1, [], run_dir=tmp_path))
        try:
            with pytest.raises(EdgeStartError) as failure:
                await edge.start()
        finally:
            await edge.stop()

    message = str(failure.value)
    assert "kamailio.log" in message and "kamailio -c" in message
    assert "Address already in use" in message or "bind" in message, message
    assert edge.pid is None


def test_the_config_passes_kamailios_own_check(tmp_path: Path) -> None:
    settings = EdgeSettings(
        listen_host="0.0.0.0", port=5060, workers=[5100, 5101], calls_per_worker=4,
        trunks=[LOCAL_TRUNK, EdgeTrunk("carrier-v6", ["2001:db8::/32", "192.0.2.7"])],
        run_dir=tmp_path, advertise="192.0.2.1",
    )
    (tmp_path / "dispatcher.list").write_text(render_dispatcher(settings))
    (tmp_path / "kamailio.cfg").write_text(render_config(settings))

    check = subprocess.run(["kamailio", "-c", "-f", str(tmp_path / "kamailio.cfg")], capture_output=True, text=True)

    assert check.returncode == 0, check.stdout + check.stderr
    assert "listen=udp:0.0.0.0:5060 advertise 192.0.2.1:5060" in render_config(settings)
    assert '"2001:db8::/32,192.0.2.7/32"' in render_config(settings)
    assert "1 sip:127.0.0.1:5101 0 1 duid=w5101;maxload=4" in render_dispatcher(settings)


def test_a_wildcard_listen_without_advertise_binds_each_address(tmp_path: Path) -> None:
    settings = EdgeSettings("0.0.0.0", 5070, [5100], 1, [], run_dir=tmp_path)
    config = render_config(settings)
    (tmp_path / "dispatcher.list").write_text(render_dispatcher(settings))
    (tmp_path / "kamailio.cfg").write_text(config)

    check = subprocess.run(["kamailio", "-c", "-f", str(tmp_path / "kamailio.cfg")], capture_output=True, text=True)

    assert check.returncode == 0, check.stdout + check.stderr
    assert "port=5070" in config and "listen=" not in config
    # An advertised address only makes sense for a wildcard socket.
    local = EdgeSettings("127.0.0.1", 5070, [5100], 1, [], run_dir=tmp_path, advertise="192.0.2.1")
    assert "advertise" not in render_config(local)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"trunks": [EdgeTrunk("carrier a", ["10.0.0.0/8"])]}, ValueError),
        ({"trunks": [EdgeTrunk("carrier-a", ["10.0.0.300/8"])]}, ValueError),
        ({"trunks": [EdgeTrunk("carrier-a", ["10.0.0.0/8"], "user", None)]}, ValueError),
        ({"trunks": [EdgeTrunk("carrier-a", ["10.0.0.0/8"], None, "secret")]}, ValueError),
        ({"trunks": [EdgeTrunk("carrier-a", [], 'us"er', "secret")]}, ValueError),
        ({"trunks": [EdgeTrunk("carrier-a", [], "user", "sec\nret")]}, ValueError),
        ({"trunks": [EdgeTrunk("carrier-a", [], "user", "a"), EdgeTrunk("carrier-b", [], "user", "b")]}, ValueError),
        ({"outbound_hosts": ["carrier.example;maddr=x"]}, ValueError),
        ({"outbound_hosts": ["carrier.example:70000"]}, ValueError),
        ({"secret": "short"}, ValueError),
        ({"workers": []}, ValueError),
        ({"calls_per_worker": 0}, ValueError),
    ],
)
def test_settings_kamailio_would_misread_are_refused(change: dict[str, object], error: type[Exception]) -> None:
    base: dict[str, object] = dict(listen_host="127.0.0.1", port=5060, workers=[5100], calls_per_worker=2, trunks=[])
    with pytest.raises(error):
        render_config(EdgeSettings(**{**base, **change}))  # type: ignore[arg-type]


async def test_a_draining_edge_refuses_new_calls_503_while_a_live_call_ends_normally(stack: StackFactory) -> None:
    gateway = await stack(workers=1, calls_per_worker=2, retry_after_s=9)
    held = await gateway.caller("held", uac_call(hold_ms=8000))
    await gateway.wait_for("the call up", lambda: len(gateway.workers[0].requests("ACK")) == 1, timeout=5)

    await gateway.edge.set_draining(True)
    assert held.process.returncode is None, "the live call must still be up when the drain starts"

    await gateway.call("new", uac_rejected(503, "Retry-After", "^ *9$"))
    assert gateway.invites() == [1], "the refused call reached no worker"
    assert options_status(gateway.edge.settings.port) == "SIP/2.0 200 OK"
    # The live call's BYE is in-dialog: it passes the drain and the caller gets its 200.
    assert await held.wait(20) == 0, held.report()
    assert len(gateway.workers[0].requests("BYE")) == 1

    await gateway.edge.set_draining(False)
    await gateway.call("after", uac_call())
    assert gateway.invites() == [2]


async def test_a_killed_edge_starts_again_still_draining_and_passes_live_calls_bye(stack: StackFactory) -> None:
    gateway = await stack(workers=1, calls_per_worker=2, retry_after_s=9)
    restarts: list[int] = []
    gateway.edge.on_restart = lambda: restarts.append(1)
    held = await gateway.caller("held", uac_call(hold_ms=6000))
    await gateway.wait_for("the call up", lambda: len(gateway.workers[0].requests("ACK")) == 1, timeout=5)
    await gateway.edge.set_draining(True)

    killed = gateway.edge.pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    await gateway.wait_for("a new edge process", lambda: gateway.edge.running and gateway.edge.pid != killed,
                           timeout=10)
    assert restarts == [1]
    await gateway.call("new", uac_rejected(503, "Retry-After", "^ *9$"))
    assert gateway.invites() == [1]
    # Dialogs live in the endpoints, not the edge: the held call's BYE carries a route the new
    # process (same secret) accepts, and reaches the worker.
    assert await held.wait(20) == 0, held.report()
    assert len(gateway.workers[0].requests("BYE")) == 1


async def test_draining_a_stopped_edge_says_so(tmp_path: Path) -> None:
    edge = Edge(EdgeSettings(listen_host=HOST, port=5999, workers=[5998], calls_per_worker=1, trunks=[],
                             run_dir=tmp_path / "edge"))
    with pytest.raises(EdgeControlError, match="not running"):
        await edge.set_draining(True)
