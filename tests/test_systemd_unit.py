"""systemd/switchboard.service runs the appliance unprivileged and hardened, as systemd itself reads it.

`systemd-analyze verify` and `systemd-analyze security --offline=true` read the unit as a file, so
these run without systemd as PID 1 (a container). ExecStart is pointed at a binary that exists,
because verify refuses a unit whose command is missing and the venv lives under /opt only once
scripts/install.sh has run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "switchboard.service"
LOWPORT = ROOT / "systemd" / "switchboard-lowport.conf"
INSTALL = ROOT / "scripts" / "install.sh"
# Measured with systemd 252 (Debian 12): 9.6 UNSAFE before the unit was hardened, 1.3 OK after
# (1.7 with the low-port drop-in). What is left: network access (the point of the appliance),
# @privileged (Kamailio chowns its pid file) and @resources (OpenBLAS, onnxruntime) system
# calls, W+X memory (ctypes), group-readable files.
EXPOSURE_MAX = 1.5
EXPOSURE_MAX_LOWPORT = 1.9

HARDENING = {
    "User": "switchboard",
    "Group": "switchboard",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "UMask": "0027",
    "StateDirectory": "switchboard",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
}


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        # scripts/test.sh installs it (Debian's systemd package); a run without it is a broken setup.
        pytest.fail("systemd-analyze is missing: run scripts/test.sh (it installs Debian's systemd package)",
                    pytrace=False)
    return path


def _settings(path: Path) -> dict[str, list[str]]:
    """[Service] key → its values in order (a key may repeat; an empty value resets it)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]":
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def _copy(tmp_path: Path, lowport: bool = False) -> Path:
    """The unit in a directory of its own, ExecStart on a binary that exists, the drop-in beside it if asked."""
    text = UNIT.read_text()
    assert re.search(r"^ExecStart=/opt/switchboard/venv/bin/appliance ", text, re.M), \
        "ExecStart moved: update this test"
    unit = tmp_path / "switchboard.service"
    unit.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, flags=re.M))
    if lowport:
        dropins = tmp_path / "switchboard.service.d"
        dropins.mkdir()
        shutil.copy(LOWPORT, dropins / "lowport.conf")
    return unit


def _run(*args: str, unit_dir: Path) -> subprocess.CompletedProcess[str]:
    # The unit's directory first in the search path, so its drop-in directory is read too; the
    # trailing ":" keeps the system's own directories (the targets it names) after it.
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:", SYSTEMD_LOG_COLOR="0", SYSTEMD_COLORS="0")
    return subprocess.run([_analyze(), *args], capture_output=True, text=True, env=env, timeout=60)


def _exposure(unit: Path) -> float:
    result = _run("security", "--offline=true", str(unit), unit_dir=unit.parent)
    found = re.search(r"Overall exposure level for switchboard\.service: (\d+\.\d+)", result.stdout)
    assert found, f"no overall exposure in:\n{result.stdout}\n{result.stderr}"
    return float(found.group(1))


@pytest.mark.parametrize("lowport", [False, True], ids=["unit", "unit+lowport"])
def test_systemd_verifies_the_unit_without_a_word(tmp_path: Path, lowport: bool) -> None:
    unit = _copy(tmp_path, lowport)
    result = _run("verify", str(unit), unit_dir=tmp_path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", f"systemd-analyze verify said:\n{output}"


def test_the_unit_runs_as_the_switchboard_user_with_every_hardening_setting() -> None:
    settings = _settings(UNIT)
    assert settings.get("User", [""])[-1] not in ("", "root", "0")
    for key, value in HARDENING.items():
        assert settings.get(key, [None])[-1] == value, f"{key}={value} expected, found {settings.get(key)}"
    assert "/var/lib/switchboard" in " ".join(settings.get("ReadWritePaths", [])).split()
    assert set(settings["RestrictAddressFamilies"][-1].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    # `import ctypes` maps a writable and executable libffi trampoline: the appliance would not start.
    assert "MemoryDenyWriteExecute" not in settings
    # Kamailio exits when chown() of its pid file fails, and chown() is in @privileged.
    assert settings["SystemCallFilter"] == ["@system-service"]


def test_the_lowport_dropin_grants_only_binding_low_ports() -> None:
    settings = _settings(LOWPORT)
    assert settings["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["PrivateUsers"] == ["no"]
    assert "User" not in settings and "NoNewPrivileges" not in settings


def test_the_unit_exposure_stays_low(tmp_path: Path) -> None:
    exposure = _exposure(_copy(tmp_path))
    assert exposure <= EXPOSURE_MAX, f"systemd-analyze security: exposure {exposure} > {EXPOSURE_MAX}"


def test_the_unit_with_the_lowport_dropin_stays_low(tmp_path: Path) -> None:
    exposure = _exposure(_copy(tmp_path, lowport=True))
    assert exposure <= EXPOSURE_MAX_LOWPORT, f"systemd-analyze security: exposure {exposure} > {EXPOSURE_MAX_LOWPORT}"


def test_install_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(INSTALL)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
