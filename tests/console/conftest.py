"""An appliance with a console: one WebRTC gateway, the desk flow (number 300 → queue billing)
and three operators: alice and bob serve billing, carol serves technical."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.console import add_user

FLOWS = Path(__file__).parent / "flows"


@pytest.fixture
def desk(appliance_factory):
    app = appliance_factory(rtc_workers=1, flows_dir=FLOWS, numbers={"300": "desk"})
    for name, queues in (("alice", "billing"), ("bob", "billing"), ("carol", "technical")):
        add_user(app, name, queues=queues)
    return app
