"""The `appliance` command run as an admin runs it, against a config of its own in a test's directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def appliance(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`appliance --config tmp_path/appliance.yaml ARGS`: the shipped flows, data in tmp_path/data."""
    config = tmp_path / "appliance.yaml"
    config.write_text(f"flows_dir: {ROOT / 'flows'}\ndata_dir: {tmp_path / 'data'}\n"
                      f"recordings_dir: {tmp_path / 'rec'}\n")
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(config), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, input=stdin,
        env=os.environ | (env or {}),
    )
