"""The digest credentials a worker answers the carrier's 401/407 challenges with, and how they travel.

The gateway hands them to each worker process: the host and user as arguments, the password in
the environment only, since any local user can read a process's command line (`ps`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DialAuth", "PASSWORD_ENV"]

PASSWORD_ENV = "SWITCHBOARD_DIAL_PASSWORD"
# pjsip writes the user into a quoted-string unescaped; no header may carry a control character.
_BAD_USER = re.compile(r'[\x00-\x1f\x7f"\\]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class DialAuth:
    """Credentials for the calls a worker places to one host: the carrier's termination (host:port)."""

    host: str  # as sip.edge_config.outbound_hosts writes it, e.g. example.pstn.twilio.com:5060
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.username or _BAD_USER.search(self.username):
            raise ValueError("the digest username must be non-empty, without quotes, backslashes or control characters")
        if not self.password or _CONTROL.search(self.password):
            raise ValueError("the digest password must be non-empty, without control characters or newlines")

    def worker_args(self) -> list[str]:
        return ["--dial-auth-host", self.host, "--dial-auth-user", self.username]

    def worker_env(self) -> dict[str, str]:
        return {PASSWORD_ENV: self.password}

    @staticmethod
    def for_worker(host: str | None, username: str | None, environ: Mapping[str, str]) -> DialAuth | None:
        """In the worker: the credentials its arguments and environment carry, if any."""
        if host is None and username is None:
            return None
        if host is None or username is None:
            raise ValueError("--dial-auth-host and --dial-auth-user go together")
        return DialAuth(host, username, environ.get(PASSWORD_ENV, ""))
