from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.deploy.box import Box, rootfs


def _need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        # scripts/test.sh installs these; a run without them is a broken setup, not a skip.
        pytest.fail(f"missing programs {missing}: run scripts/test.sh", pytrace=False)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    """A fresh Debian 12 box for the test module, booted, reachable over SSH; stopped after it."""
    _need("debootstrap", "systemd-nspawn", "nsenter", "ssh", "sipp")
    image = rootfs()
    box = Box(tmp_path_factory.mktemp("box") / "root")
    box.prepare(image)
    try:
        box.boot()
        yield box
    finally:
        box.stop()
        shutil.rmtree(box.root, ignore_errors=True)
