"""Console accounts in a real SQLite file: what an admin sets up and what a login checks."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from appliance.core.errors import AccountError
from appliance.operators.accounts import Account, Accounts, check_password
from appliance.storage.db import Storage

PASSWORD = "correct horse battery"


@pytest.fixture
def storage(tmp_path: Path):
    storage = Storage(tmp_path / "data" / "switchboard.db")
    yield storage
    storage.close()


@pytest.fixture
def accounts(storage: Storage) -> Accounts:
    return Accounts(storage)


def test_added_account_is_listed_and_verifies(accounts: Accounts):
    added = accounts.add("ada", "operator", ["billing", "technical"], PASSWORD)
    assert added == Account("ada", "operator", ("billing", "technical"), disabled=False)
    assert accounts.list() == [added]
    assert accounts.verify("ada", PASSWORD) == added


def test_hash_is_self_describing_scrypt_and_not_the_password(accounts: Accounts, storage: Storage):
    accounts.add("ada", "operator", [], PASSWORD)
    stored = storage.get_user("ada")
    assert stored is not None
    scheme, n, r, p, salt, key = stored.password_hash.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert (len(base64.b64decode(salt)), len(base64.b64decode(key))) == (16, 32)
    assert PASSWORD not in stored.password_hash
    assert stored.password_hash not in repr(stored)
    # The same password twice: two salts, two hashes.
    accounts.add("bob", "operator", [], PASSWORD)
    other = storage.get_user("bob")
    assert other is not None and other.password_hash != stored.password_hash


def test_wrong_password_unknown_user_and_disabled_account_do_not_verify(accounts: Accounts):
    accounts.add("ada", "supervisor", [], PASSWORD)
    assert accounts.verify("ada", PASSWORD + "!") is None
    assert accounts.verify("ada", "") is None
    assert accounts.verify("nobody", PASSWORD) is None
    assert accounts.verify("Not A Name\n", PASSWORD) is None
    assert accounts.verify("ada", "x" * 100_000) is None
    accounts.disable("ada")
    assert accounts.verify("ada", PASSWORD) is None
    assert accounts.list()[0].disabled
    accounts.enable("ada")
    assert accounts.verify("ada", PASSWORD) == Account("ada", "supervisor", (), disabled=False)


def test_passwd_changes_the_password(accounts: Accounts):
    accounts.add("ada", "admin", [], PASSWORD)
    accounts.passwd("ada", "a new secret")
    assert accounts.verify("ada", PASSWORD) is None
    assert accounts.verify("ada", "a new secret") is not None


def test_duplicate_username_is_a_clear_error(accounts: Accounts):
    accounts.add("ada", "operator", [], PASSWORD)
    with pytest.raises(AccountError, match="user 'ada' already exists"):
        accounts.add("ada", "admin", [], "another password")
    assert accounts.list()[0].role == "operator"


@pytest.mark.parametrize("name", ["", "Ada", "-ada", ".ada", "ada smith", "ada\n", "a" * 33, "adä"])
def test_bad_usernames_are_refused(accounts: Accounts, name: str):
    with pytest.raises(AccountError, match="bad username"):
        accounts.add(name, "operator", [], PASSWORD)
    assert accounts.list() == []


def test_longest_and_punctuated_usernames_are_taken(accounts: Accounts):
    accounts.add("a" * 32, "operator", [], PASSWORD)
    accounts.add("0ada.smith_2-x", "operator", [], PASSWORD)
    assert len(accounts.list()) == 2


def test_short_password_and_bad_role_are_refused(accounts: Accounts):
    with pytest.raises(AccountError, match="at least 8 characters"):
        accounts.add("ada", "operator", [], "1234567")
    with pytest.raises(AccountError, match="bad role 'agent': one of operator, supervisor, admin"):
        accounts.add("ada", "agent", [], PASSWORD)
    accounts.add("ada", "operator", [], "12345678")
    with pytest.raises(AccountError, match="at least 8 characters"):
        accounts.passwd("ada", "short")
    assert accounts.verify("ada", "12345678") is not None


def test_unknown_user_cannot_be_changed(accounts: Accounts):
    for change in (accounts.disable, accounts.enable):
        with pytest.raises(AccountError, match="no user 'ghost'"):
            change("ghost")
    with pytest.raises(AccountError, match="no user 'ghost'"):
        accounts.passwd("ghost", PASSWORD)


def test_queues_are_cleaned_and_can_be_changed(accounts: Accounts):
    added = accounts.add("ada", "operator", [" billing", "billing", "", "technical "], PASSWORD)
    assert added.queues == ("billing", "technical")
    assert accounts.set_queues("ada", ["sales"]).queues == ("sales",)
    with pytest.raises(AccountError, match="bad queue name"):
        accounts.set_queues("ada", ["a,b"])


def test_a_hash_this_code_did_not_write_never_matches():
    assert not check_password(PASSWORD, "plain")
    assert not check_password(PASSWORD, "md5$1$2$3$abc$def")
    assert not check_password(PASSWORD, "scrypt$16384$8$1$not base64!$AAAA")


def test_the_password_is_not_logged(accounts: Accounts, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    accounts.add("ada", "operator", [], PASSWORD)
    accounts.passwd("ada", "a new secret")
    accounts.verify("ada", "a new secret")
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "account added" in logged
    assert PASSWORD not in logged and "a new secret" not in logged and "scrypt$" not in logged
