"""Errors a user can cause, drawn once as a tree.

SwitchboardError
├── ConfigError          appliance.yaml is missing, unreadable or invalid
├── FlowError            a flow file is broken; carries every problem with file:line:col
├── AuthError            a token is missing, invalid, expired or lacks the grant
├── AccountError         an operator account is unknown, taken, or given a bad name, role or password
├── ProtocolError        a participant sent a message that breaks the participant protocol
├── MaintenanceError     a maintenance command (backup, recordings prune) cannot do what was asked
├── AlreadyRunningError  another `appliance run` holds the data directory
└── RecordingError       a finished recording cannot be converted to the configured format (disk full, bad file)
"""

from __future__ import annotations

from dataclasses import dataclass


class SwitchboardError(Exception):
    """Base of every error a user or peer can cause."""


class ConfigError(SwitchboardError):
    pass


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a file, at a place an editor can jump to."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "col": self.col, "message": self.message}


class FlowError(SwitchboardError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class AuthError(SwitchboardError):
    pass


class AccountError(SwitchboardError):
    pass


class ProtocolError(SwitchboardError):
    pass


class MaintenanceError(SwitchboardError):
    pass


class AlreadyRunningError(SwitchboardError):
    pass


class RecordingError(SwitchboardError):
    pass
