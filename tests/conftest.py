from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.appliance import ApplianceProcess


def _need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        # scripts/test.sh installs these; a run without them is a broken setup, not a skip.
        pytest.fail(f"missing programs {missing}: run scripts/test.sh", pytrace=False)


@pytest.fixture
def appliance_factory(tmp_path: Path) -> Iterator:
    _need("kamailio", "sipp")
    started: list[ApplianceProcess] = []

    def make(**kwargs) -> ApplianceProcess:
        root = tmp_path / f"appliance{len(started)}"
        root.mkdir(exist_ok=True)  # a test may have laid out an older install there
        app = ApplianceProcess(root, **kwargs)
        started.append(app)
        app.start()
        return app

    yield make
    for app in started:
        app.stop()


@pytest.fixture
def appliance(appliance_factory) -> ApplianceProcess:
    return appliance_factory()
