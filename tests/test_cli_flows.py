"""`appliance flows check|simulate|test` as an admin runs them: real processes, exit codes and what they print."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOWS = ROOT / "flows"


def appliance(tmp_path: Path, *args: str, flows_dir: Path = FLOWS) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "appliance.yaml"
    config.write_text(f"flows_dir: {flows_dir}\ndata_dir: {tmp_path / 'data'}\nrecordings_dir: {tmp_path / 'rec'}\n")
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--config", str(config), "flows", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )


def test_check_passes_the_shipped_flows(tmp_path: Path):
    done = appliance(tmp_path, "check")
    assert (done.returncode, done.stdout) == (0, "flows OK\n"), done.stderr


def test_check_lists_every_problem_as_json_on_a_broken_directory(tmp_path: Path):
    broken = tmp_path / "flows"
    shutil.copytree(FLOWS, broken)
    default = broken / "default.yaml"
    default.write_text(default.read_text().replace("next: main_menu", "next: main_mneu"))
    (broken / "queues.yaml").write_text("queues:\n  billing: {}\n  technical: {descripton: x}\n")
    done = appliance(tmp_path, "check", "--json", flows_dir=broken)
    assert done.returncode == 1, done.stderr
    problems = json.loads(done.stdout)
    assert all(set(p) == {"file", "line", "col", "message"} for p in problems)
    assert {"file": str(default), "line": 8, "col": 11, "message": "step 'main_mneu' does not exist"} in problems
    assert {"file": str(broken / "queues.yaml"), "line": 3, "col": 15,
            "message": "unknown field 'descripton'"} in problems
    # the same, editor-style, without --json
    text = appliance(tmp_path, "check", flows_dir=broken)
    assert text.returncode == 1
    assert f"{default}:8:11: step 'main_mneu' does not exist" in text.stdout.splitlines()


def test_check_of_one_file(tmp_path: Path):
    done = appliance(tmp_path, "check", str(FLOWS / "support.yaml"))
    assert (done.returncode, done.stdout) == (0, "flows OK\n"), done.stderr


def test_simulate_prints_the_prompts_heard_and_the_outcome(tmp_path: Path):
    script = tmp_path / "caller.txt"
    script.write_text("technical support please\nsilence 90\nthis is Ada\n#\n")
    done = appliance(tmp_path, "simulate", "support", "--script", str(script), "--now", "2026-11-24T15:00:00+00:00")
    assert done.returncode == 0, done.stderr
    heard = [line.split("🔊 ", 1)[1] for line in done.stdout.splitlines() if "🔊" in line]
    assert heard == [
        "Welcome to Acme support.",
        ("For billing, press 1 or say billing. For technical support, press 2 or say technical support. "
         "To leave a message, press 3."),
        "Please hold for technical support.",
        "[hold music]",
        "All our agents are busy.",
        "Please leave your name, number and a short message after the tone. Press pound when you are done.",
        "[beep]",
        "Thank you. We will call you back. Goodbye.",
    ]
    assert "> technical support please" in done.stdout
    assert done.stdout.rstrip().endswith("outcome: voicemail")


def test_simulate_after_hours_with_a_variable(tmp_path: Path):
    script = tmp_path / "caller.txt"
    script.write_text("hangup\n")
    done = appliance(tmp_path, "simulate", "support", "--script", str(script), "--var", "caller=+15550100",
                     "--now", "2026-11-24T03:00:00+00:00")
    assert done.returncode == 0, done.stderr
    assert "We are closed" in done.stdout
    assert '"caller": "+15550100"' in done.stdout and '"open": false' in done.stdout


def test_simulate_an_unknown_flow(tmp_path: Path):
    done = appliance(tmp_path, "simulate", "sales", "--script", "/dev/null")
    assert done.returncode == 2
    assert "no flow named 'sales' (have: default, " in done.stderr and "support" in done.stderr


def test_test_passes_the_shipped_tests(tmp_path: Path):
    done = appliance(tmp_path, "test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 failed" in done.stdout.splitlines()[-1]
    assert "PASS" in done.stdout and "FAIL" not in done.stdout


def test_test_fails_with_a_readable_difference(tmp_path: Path):
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        "flow: default\n"
        "cases:\n"
        "  - name: key 1 reaches sales\n"
        "    caller: ['#1']\n"
        "    expect:\n"
        "      heard: [Welcome to Switchboard, Routing you to billing]\n"
        "      steps: [welcome, main_menu, billing]\n"
        "      outcome: transferred:sales\n"
        "  - name: key 2 reaches support\n"
        "    caller: ['#2']\n"
        "    expect: {heard: [Routing you to support]}\n"
    )
    done = appliance(tmp_path, "test", str(wrong))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"FAIL {wrong}: key 1 reaches sales",
        "    heard: expected 'Routing you to billing' (in order); the caller heard:",
        "      | Welcome to Switchboard.",
        "      | For sales, press 1. For support, press 2.",
        "      | Routing you to sales. Goodbye.",
        "    steps: expected 'billing' (in order); visited welcome → main_menu → sales → done",
        "    outcome: expected transferred:sales, got hangup",
        f"PASS {wrong}: key 2 reaches support",
        "1 passed, 1 failed",
    ]


def test_test_of_a_broken_test_file_says_where(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("flow: default\ncases: [\n")
    done = appliance(tmp_path, "test", str(broken))
    assert done.returncode == 2
    assert done.stderr.startswith(f"appliance: {broken}:3:1: YAML syntax"), done.stderr
