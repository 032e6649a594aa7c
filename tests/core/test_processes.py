"""Children the appliance starts run below it: the hub's clock never waits behind a worker."""

from __future__ import annotations

import os

from appliance.core.processes import BACKGROUND_NICE, WORKER_NICE, spawn_module


async def _niceness_of_child(**kwargs: int) -> int:
    # A child that stays long enough to be looked at: timeit running one 30-second sleep.
    child = await spawn_module("timeit", ["-n", "1", "-r", "1", "import time; time.sleep(30)"], env={},
                               capture=True, **kwargs)
    try:
        return os.getpriority(os.PRIO_PROCESS, child.pid)
    finally:
        child.kill()
        await child.communicate()


async def test_workers_run_nicer_than_the_appliance_and_background_work_nicer_still():
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert await _niceness_of_child() == min(19, mine + WORKER_NICE)
    assert await _niceness_of_child(nice=BACKGROUND_NICE) == min(19, mine + BACKGROUND_NICE)
