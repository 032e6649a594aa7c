"""A worker whose token the hub refuses says so and exits, and the appliance's process pool starts
it again with a fresh token, so a worker that lost the hub after its token expired is not
refused forever while its SIP port still answers the edge. Real hub socket, real worker process."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appliance.core.processes import ProcessPool
from appliance.rooms import protocol as p
from appliance.rooms.tokens import worker_identity
from sip.worker import EXIT_REFUSED
from tests.rooms.test_protocol_fuzz import (
    Switchboard,
    close_switchboard,
    open_switchboard,
)
from tests.support.appliance import ROOT
from tests.support.ports import free_port_block

EXPIRED = dt.timedelta(minutes=-5)  # past the verifier's minute of clock-skew leeway


@pytest.fixture
async def board() -> AsyncIterator[Switchboard]:
    with tempfile.TemporaryDirectory(prefix="sb-tok-") as directory:
        board = await open_switchboard(Path(directory), timeout_s=5)
        yield board
        await close_switchboard(board)


async def test_an_expired_token_is_refused_in_words(board: Switchboard) -> None:
    token = board.tokens.mint(worker_identity("sip", "w1"), "sip", ttl=EXPIRED)
    with pytest.raises(p.HubRefused, match="invalid token"):
        await p.join_hub(str(board.path), p.Hello(token=token, worker="w1", capacity=4))


async def test_a_token_cannot_join_under_another_workers_name(board: Switchboard) -> None:
    token = board.tokens.mint(worker_identity("sip", "w1"), "sip")
    with pytest.raises(p.HubRefused, match="cannot join as worker 'w2'"):
        await p.join_hub(str(board.path), p.Hello(token=token, worker="w2", capacity=4))
    assert "w2" not in board.server.registry.sip


async def test_a_refused_worker_exits_and_its_restart_joins_with_a_fresh_token(board: Switchboard) -> None:
    sip_port, edge_port = free_port_block(2), free_port_block(1)
    rtp_port = free_port_block(8)
    tokens: list[str] = []
    started: list[asyncio.subprocess.Process] = []

    async def spawn() -> asyncio.subprocess.Process:
        # The first start carries a token that expired (a worker that ran past its token's life);
        # every start after it, as the appliance's gateway does, a freshly minted one.
        ttl = EXPIRED if not tokens else None
        tokens.append(board.tokens.mint(worker_identity("sip", "w1"), "sip", ttl=ttl))
        env = dict(os.environ, SWITCHBOARD_WORKER_TOKEN=tokens[-1], PYTHONPATH=str(ROOT))
        started.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sip.worker", "--name", "w1", "--sip-port", str(sip_port),
            "--rtp-port", str(rtp_port), "--rtp-ports", "8", "--hub-socket", str(board.path),
            "--edge", f"127.0.0.1:{edge_port}", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        ))
        return started[-1]

    pool = ProcessPool("sip-worker")
    pool.start("w1", spawn)
    try:
        async with asyncio.timeout(60):
            while "w1" not in board.server.registry.sip:
                await asyncio.sleep(0.1)
    finally:
        await pool.stop()
    assert started[0].returncode == EXIT_REFUSED
    assert len(started) == 2 and tokens[0] != tokens[1]
