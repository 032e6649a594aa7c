"""Fixtures shared by the SIP tests: the programs they need and a Kamailio edge in front of sipp workers."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sip.edge import Edge
from sip.edge_config import EdgeSettings, EdgeTrunk
from tests.support.edge import LOCAL_TRUNK, Stack, StackFactory
from tests.support.ports import free_port_block
from tests.support.sipp.process import HOST, Sipp, start_uas


@pytest.fixture(autouse=True)
def _programs() -> None:
    missing = [p for p in ("kamailio", "kamcmd", "sipp") if shutil.which(p) is None]
    if missing:
        # As elsewhere in tests/: a run without them is a broken setup, not a skip.
        pytest.fail(f"missing programs {missing}: run scripts/test.sh", pytrace=False)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[StackFactory]:
    """Builds one Stack; every process it or the test started is stopped by PID at the end."""
    built: list[Stack] = []
    uas: list[Sipp] = []

    async def build(
        workers: int = 2,
        calls_per_worker: int = 2,
        trunks: list[EdgeTrunk] | None = None,
        scenarios: list[str | None] | None = None,
        spare: int = 0,
        announced: bool = False,
        **settings: object,
    ) -> Stack:
        first = free_port_block(workers + spare + 1)
        *ports, edge_port = range(first, first + workers + spare + 1)
        for i, port in enumerate(ports[:workers]):
            uas.append(await start_uas(tmp_path, f"worker{i}", port, scenarios[i] if scenarios else None))
        fields: dict[str, object] = dict(
            listen_host=HOST, port=edge_port, workers=ports, calls_per_worker=calls_per_worker,
            trunks=[LOCAL_TRUNK] if trunks is None else trunks, run_dir=tmp_path / "edge",
        )
        edge = Edge(EdgeSettings(**{**fields, **settings}), announced_workers=announced)  # type: ignore[arg-type]
        built.append(Stack(tmp_path, edge, list(uas), spare=ports[workers:]))
        await edge.start()
        return built[-1]

    try:
        yield build
    finally:
        for each in built:
            for sipp in each.started:
                await sipp.stop()
            await each.edge.stop()
        for sipp in uas:
            await sipp.stop()
