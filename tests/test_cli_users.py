"""`appliance users …` and `appliance cert` as an admin runs them: real processes, exit codes, output."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.operators.accounts import Accounts
from appliance.storage import Storage
from tests.support.cli import appliance

ROOT = Path(__file__).resolve().parents[1]
FLOWS = ROOT / "flows"
PASSWORD = "correct horse battery"


def accounts(tmp_path: Path) -> Accounts:
    return Accounts(Storage(tmp_path / "data" / "switchboard.db"))


def test_add_list_disable_enable(tmp_path: Path):
    env = {"NEW_PASSWORD": PASSWORD}
    added = appliance(tmp_path, "users", "add", "ada", "--role", "operator", "--queues", "billing,technical",
                      "--password-env", "NEW_PASSWORD", env=env)
    assert (added.returncode, added.stderr) == (0, ""), added.stderr
    assert "added ada" in added.stdout
    assert accounts(tmp_path).verify("ada", PASSWORD) is not None

    listed = appliance(tmp_path, "users", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows == [["username", "role", "disabled", "queues"], ["ada", "operator", "no", "billing,technical"]]
    assert "scrypt" not in listed.stdout and PASSWORD not in listed.stdout

    assert appliance(tmp_path, "users", "disable", "ada").returncode == 0
    assert appliance(tmp_path, "users", "list").stdout.splitlines()[1].split()[2] == "yes"
    assert accounts(tmp_path).verify("ada", PASSWORD) is None
    assert appliance(tmp_path, "users", "enable", "ada").returncode == 0
    assert accounts(tmp_path).verify("ada", PASSWORD) is not None


def test_passwd_from_the_environment(tmp_path: Path):
    appliance(tmp_path, "users", "add", "ada", "--role", "admin", "--password-env", "P", env={"P": PASSWORD})
    done = appliance(tmp_path, "users", "passwd", "ada", "--password-env", "P", env={"P": "a new secret"})
    assert done.returncode == 0, done.stderr
    assert accounts(tmp_path).verify("ada", PASSWORD) is None
    assert accounts(tmp_path).verify("ada", "a new secret") is not None


def test_password_asked_twice_must_match(tmp_path: Path):
    # Without a terminal getpass reads the lines from stdin (and says so on stderr).
    done = appliance(tmp_path, "users", "add", "ada", "--role", "operator", stdin=f"{PASSWORD}\nsomething else\n")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "appliance: the passwords do not match"
    assert accounts(tmp_path).list() == []
    done = appliance(tmp_path, "users", "add", "ada", "--role", "operator", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert done.returncode == 0, done.stderr
    assert accounts(tmp_path).verify("ada", PASSWORD) is not None


def test_user_errors_are_one_line_and_exit_1(tmp_path: Path):
    env = {"P": PASSWORD}
    cases = [
        (("users", "add", "ada", "--role", "boss", "--password-env", "P"),
         "appliance: bad role 'boss': one of operator, supervisor, admin"),
        (("users", "add", "Ada!", "--role", "operator", "--password-env", "P"), "appliance: bad username 'Ada!'"),
        (("users", "add", "ada", "--role", "operator", "--password-env", "UNSET_VAR"),
         "appliance: environment variable UNSET_VAR is not set"),
        (("users", "disable", "ghost"), "appliance: no user 'ghost'"),
        (("users", "passwd", "ghost", "--password-env", "P"), "appliance: no user 'ghost'"),
    ]
    for args, message in cases:
        done = appliance(tmp_path, *args, env=env)
        assert done.returncode == 1, (args, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(message), done.stderr
    short = appliance(tmp_path, "users", "add", "ada", "--role", "operator", "--password-env", "P", env={"P": "short"})
    assert (short.returncode, short.stderr) == (1, "appliance: password too short: at least 8 characters\n")
    appliance(tmp_path, "users", "add", "ada", "--role", "operator", "--password-env", "P", env=env)
    again = appliance(tmp_path, "users", "add", "ada", "--role", "admin", "--password-env", "P", env=env)
    assert (again.returncode, again.stderr) == (1, "appliance: user 'ada' already exists\n")


def test_unknown_queue_is_a_warning_not_a_refusal(tmp_path: Path):
    done = appliance(tmp_path, "users", "add", "ada", "--role", "operator", "--queues", "billing,sales",
                     "--password-env", "P", env={"P": PASSWORD})
    assert done.returncode == 0
    assert done.stderr == f"appliance: warning: no queue sales in {FLOWS / 'queues.yaml'}\n"
    account = accounts(tmp_path).get("ada")
    assert account is not None and account.queues == ("billing", "sales")


def test_list_with_no_users(tmp_path: Path):
    done = appliance(tmp_path, "users", "list")
    assert (done.returncode, done.stdout) == (0, "")
    assert "appliance users add" in done.stderr


def test_cert_prints_the_path_and_fingerprint_and_keeps_them(tmp_path: Path):
    first = appliance(tmp_path, "cert")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == f"certificate: {tmp_path / 'data' / 'console.crt'}"
    assert re.fullmatch(r"fingerprint: SHA-256 ([0-9A-F]{2}:){31}[0-9A-F]{2}", first.stdout.splitlines()[1])
    assert appliance(tmp_path, "cert").stdout == first.stdout
