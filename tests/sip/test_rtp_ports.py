"""Each worker's RTP ports stay in its own block: pjsua never binds a port another worker owns."""

from __future__ import annotations

import json
import re
import socket
from collections import Counter
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.core.errors import ConfigError
from sip.gateway import Gateway
from sip.rtp_ports import PortBlock, exposed_to_ephemeral
from tests.support.sipp.process import run_sipp
from tests.support.sipp.scenarios import caller_scenario

pytestmark = pytest.mark.sip

BRIEF_FLOW = """\
name: brief
description: Says hello and hangs up, so that many calls pass through the workers quickly.
entry: hello
steps:
  hello:
    say: Hello.
    next: done
  done:
    hangup:
      reason: flow-hangup
"""


def pjsua_binds(block: PortBlock) -> set[int]:
    """Every port pjsua may bind from the block's TransportConfig: RTP from `start` up in steps of 2,
    RTCP one above each, going back to `start` once the next RTP port is above start + port_range
    (pjsua_media.c, create_rtp_rtcp_sock)."""
    rtp = range(block.start, block.start + block.port_range + 1, 2)
    return {port for first in rtp for port in (first, first + 1)}


@pytest.mark.parametrize("size", [4, 5, 16, 17, 40, 100])
def test_pjsua_binds_only_the_blocks_own_ports(size: int) -> None:
    for start in (20000, 20001):
        block = PortBlock(start, size)
        assert pjsua_binds(block) <= set(range(start, start + size))
        assert len(pjsua_binds(block)) == 2 * block.pairs == size - size % 2


def test_a_block_too_small_for_two_pairs_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 4 ports"):
        PortBlock(20000, 3)


@pytest.mark.parametrize("dial_account", [False, True])
def test_workers_and_their_accounts_bind_disjoint_ports_inside_the_configured_range(dial_account: bool) -> None:
    config = Config.model_validate({"sip": {"workers": 5, "rtp_port_start": 20000, "rtp_ports_per_worker": 40}})
    taken: list[int] = []
    for spec in Gateway(config, lambda name: "").specs:
        block = PortBlock(spec.rtp_port, config.sip.rtp_ports_per_worker)
        for account in block.split() if dial_account else (block,):
            taken += pjsua_binds(account)
    assert len(taken) == len(set(taken))  # no port is two accounts'
    assert set(taken) <= set(range(20000, 20000 + 5 * 40))  # the firewall opens exactly these


def test_many_calls_over_several_workers_bind_no_port_twice(appliance_factory, tmp_path: Path) -> None:
    """Before each worker's pjsua stopped at its block's end, this run logged 5 to 10 `RTP socket bind()
    ... Address already in use` errors (now "media port busy" warnings): a worker took the next
    worker's first pair, or found it taken."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "brief.yaml").write_text(BRIEF_FLOW)
    workers, block = 4, 16  # small blocks: every worker goes round its block several times
    app = appliance_factory(workers=workers, rtp_ports_per_worker=block, flows_dir=flows, numbers={"100": "brief"},
                            extra={"personas": {"workers": 0}})
    calls = 200
    # At most 12 at once: below the 16 the workers hold, so the edge never offers a full worker a call.
    run_sipp(caller_scenario(tmp_path, None, wait_ms=500, bye_timeout_ms=20000), app.sip_port, tmp_path,
             calls=calls, rate=20, limit=12, timeout=300)
    records = app.wait_calls_closed(calls, timeout=60)
    assert len(records) == calls
    per_worker = Counter(record["worker"] for record in records)
    # Each worker took more calls than its block has pairs, so pjsua went past its block's last pair.
    assert len(per_worker) == workers and min(per_worker.values()) > block // 2, per_worker
    lines = [json.loads(line) for line in app.log_path.read_text(errors="replace").splitlines()
             if line.startswith("{")]
    assert [line for line in lines if line.get("msg", "").startswith("media port busy")] == []


def test_a_pair_held_by_another_process_is_skipped_with_a_warning(appliance_factory, tmp_path: Path) -> None:
    """pjsua logs a port of its block that another process holds at level 1 and tries the next pair:
    the soak's `RTP socket bind() ... Address already in use` error lines. The calls connect all the
    same, so the line is a warning naming the port, and no error line is left."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "brief.yaml").write_text(BRIEF_FLOW)
    block = 8  # 4 pairs: 6 calls come back round to the held one
    app = appliance_factory(workers=1, rtp_ports_per_worker=block, flows_dir=flows, numbers={"100": "brief"},
                            extra={"personas": {"workers": 0}})
    held = app.rtp_base + 2  # the second pair's RTP port, as another test's sipp or baresip would hold it
    calls = 6
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", held))
        result = run_sipp(caller_scenario(tmp_path, None, wait_ms=500, bye_timeout_ms=20000), app.sip_port,
                          tmp_path, calls=calls, rate=5, limit=1, timeout=120)
        records = app.wait_calls_closed(calls, timeout=60)
    assert (result.successful, result.failed) == (calls, 0), result.output
    assert sorted(record["end_reason"] for record in records) == ["flow-hangup"] * calls
    lines = [json.loads(line) for line in app.log_path.read_text(errors="replace").splitlines()
             if line.startswith("{")]
    busy = [line for line in lines if line["msg"].startswith("media port busy")]
    assert busy and {line["address"] for line in busy} == {f"0.0.0.0:{held}"}, busy
    assert {line["level"] for line in busy} == {"warning"}
    assert [line for line in lines if line["level"] in ("error", "critical")] == []


@pytest.mark.parametrize(("first", "last", "port_range", "reserved", "exposed"), [
    (20000, 20199, "32768\t60999\n", "\n", 0),  # the default block on Debian's range
    (20000, 20199, "1024\t65535\n", "\n", 200),  # a widened range takes it all
    (20000, 20199, "1024\t65535\n", "20000-20199\n", 0),  # unless the role reserved it
    (20000, 20199, "1024\t65535\n", "8080,20000-20099,20150\n", 99),
    (32700, 32799, "32768\t60999\n", "\n", 32),  # across the range's first port
])
def test_rtp_ports_the_kernel_may_give_to_outgoing_sockets(first: int, last: int, port_range: str, reserved: str,
                                                           exposed: int) -> None:
    assert exposed_to_ephemeral(first, last, port_range, reserved) == exposed


@pytest.mark.parametrize(("sip", "transfers", "message"), [
    ({"rtp_ports_per_worker": 6}, {}, "at least 8 (RTP and RTCP for 4 calls per worker)"),
    ({"rtp_ports_per_worker": 12}, {"username": "box", "outbound_proxy": "sip:term.example.com",
                                    "password_env": "TERMINATION_PASSWORD"}, "at least 16"),
    ({"rtp_port_start": 65000, "workers": 20}, {}, "end at 66999, beyond 65535"),
])
def test_blocks_too_small_or_past_the_last_port_are_refused(tmp_path: Path, sip: dict, transfers: dict,
                                                            message: str) -> None:
    path = tmp_path / "appliance.yaml"
    path.write_text(json.dumps({"sip": sip, "transfers": transfers}))
    with pytest.raises(ConfigError, match=re.escape(message)):
        Config.load(path)
