"""The console's accounts: who may log in, with which role and queues, and their password check.

Passwords are kept only as scrypt hashes written `scrypt$N$r$p$<salt>$<key>` (base64), so the
cost can be raised later and old hashes still verify. Rows live in `Storage` (the users table);
this module owns the rules: names, roles, password length, hashing and the constant-time check.
"""

from __future__ import annotations

import base64
import builtins
import functools
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

from appliance.core.errors import AccountError
from appliance.observability.logging import log_extra
from appliance.rooms.tokens import PERSON_ROLES
from appliance.storage.db import Storage, UserRecord

log = logging.getLogger(__name__)

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MIN_PASSWORD = 8
# scrypt's cost does not depend on the password's length, but a megabyte password is no
# password anyone types: a bound keeps a request body from being hashed at any size.
MAX_PASSWORD = 1024
# RFC 7914's interactive parameters: 16 MiB of memory and ~50 ms per hash on one core,
# which makes an offline guess as costly as it is for the login itself.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
# Enough for N up to 2**16 with r=8 (128*N*r bytes) should a later version raise the cost.
SCRYPT_MAXMEM = 128 * 2**16 * 8 + 2**20


@dataclass(frozen=True)
class Account:
    """What the rest of the appliance knows of a person: never the password or its hash."""

    username: str
    role: str
    queues: tuple[str, ...]
    disabled: bool

    @classmethod
    def of(cls, user: UserRecord) -> Account:
        return cls(user.username, user.role, tuple(user.queues), user.disabled)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_password(password: str, encoded: str) -> bool:
    """True if `password` hashes to `encoded`, with the parameters `encoded` names."""
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(key, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p), len(expected))
    except ValueError:
        return False  # a hash this code did not write (hand-edited database): no one logs in with it
    return hmac.compare_digest(actual, expected)


class Accounts:
    def __init__(self, storage: Storage):
        self.storage = storage

    def add(self, username: str, role: str, queues: builtins.list[str], password: str) -> Account:
        _check_username(username)
        _check_role(role)
        _check_password(password)
        user = self.storage.add_user(username, role, _clean_queues(queues), hash_password(password))
        log.info("account added", extra=log_extra(username=username, role=role, queues=user.queues))
        return Account.of(user)

    def get(self, username: str) -> Account | None:
        user = self.storage.get_user(username)
        return Account.of(user) if user else None

    def passwd(self, username: str, password: str) -> None:
        _check_password(password)
        self.storage.update_user(username, password_hash=hash_password(password))
        log.info("account password changed", extra=log_extra(username=username))

    def set_queues(self, username: str, queues: builtins.list[str]) -> Account:
        return Account.of(self.storage.update_user(username, queues=_clean_queues(queues)))

    def disable(self, username: str) -> Account:
        account = Account.of(self.storage.update_user(username, disabled=True))
        log.info("account disabled", extra=log_extra(username=username))
        return account

    def enable(self, username: str) -> Account:
        account = Account.of(self.storage.update_user(username, disabled=False))
        log.info("account enabled", extra=log_extra(username=username))
        return account

    def list(self) -> builtins.list[Account]:
        return [Account.of(u) for u in self.storage.list_users()]

    def verify(self, username: str, password: str) -> Account | None:
        """The account if the password is right and the account enabled; None otherwise, whatever the reason.

        Every answer costs one scrypt: an unknown name is checked against a dummy hash, so the
        time taken does not tell which usernames exist.
        """
        user = self.storage.get_user(username) if USERNAME.fullmatch(username) else None
        if len(password) > MAX_PASSWORD:
            password = ""  # still one hash of work, never a match (stored passwords are shorter)
        right = check_password(password, user.password_hash if user else _dummy_hash())
        if user is None or not right or user.disabled:
            return None
        return Account.of(user)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=SCRYPT_MAXMEM)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _check_username(username: str) -> None:
    if not USERNAME.fullmatch(username):
        raise AccountError(f"bad username {username!r}: 1 to 32 of a-z 0-9 . _ -, starting with a letter or digit")


def _check_role(role: str) -> None:
    if role not in PERSON_ROLES:
        raise AccountError(f"bad role {role!r}: one of {', '.join(PERSON_ROLES)}")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"password too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password too long: at most {MAX_PASSWORD} characters")


def _clean_queues(queues: builtins.list[str]) -> builtins.list[str]:
    cleaned = list(dict.fromkeys(q.strip() for q in queues if q.strip()))
    # Queue names are queues.yaml's keys, which the flow schema leaves free; only what would
    # break the CLI's comma-separated list or a one-line display is refused.
    bad = [q for q in cleaned if len(q) > 64 or "," in q or not q.isprintable()]
    if bad:
        raise AccountError(f"bad queue name {bad[0]!r}: at most 64 printable characters, no commas")
    return cleaned
