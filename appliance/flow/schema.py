"""The flow language as pydantic models: a flow is named steps and an entry step.

Each step holds exactly one action key (`say`, `menu`, `gather`, `goto`, `hangup`) and,
where the action ends by itself, `next`. docs/FLOWS.md documents every step with an example.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

STEP_ID = r"^[A-Za-z_][A-Za-z0-9_-]*$"
DIGITS = "0123456789*#"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Menu(_Model):
    prompt: str
    options: dict[str, str] = Field(description="DTMF key → step")
    timeout: float = Field(5.0, gt=0, le=60)
    retries: int = Field(2, ge=0, le=10)
    invalid_prompt: str = "Sorry, that is not an option."
    no_input: str | None = Field(None, description="step when the caller never presses a key")
    no_match: str | None = Field(None, description="step when every try was a wrong key")

    @model_validator(mode="after")
    def _keys_are_digits(self) -> "Menu":
        for key in self.options:
            if len(key) != 1 or key not in DIGITS:
                raise ValueError(f"menu option {key!r} is not a single DTMF key (0-9, *, #)")
        return self


class Gather(_Model):
    prompt: str | None = None
    into: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="variable that receives the digits")
    max_digits: int = Field(1, ge=1, le=32)
    terminator: str | None = "#"
    timeout: float = Field(5.0, gt=0, le=60)
    no_input: str | None = None


class Hangup(_Model):
    reason: str = "flow-hangup"


class Step(_Model):
    say: str | None = None
    menu: Menu | None = None
    gather: Gather | None = None
    goto: str | None = None
    hangup: Hangup | None = None
    next: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_hangup(cls, data: Any) -> Any:
        if isinstance(data, dict) and "hangup" in data and data["hangup"] is None:
            data = {**data, "hangup": {}}
        return data

    @model_validator(mode="after")
    def _one_action(self) -> "Step":
        actions = [name for name in ACTIONS if getattr(self, name) is not None]
        if len(actions) != 1:
            found = ", ".join(actions) or "none"
            raise ValueError(f"a step needs exactly one of {', '.join(ACTIONS)} (found: {found})")
        if self.next is not None and self.action in ("goto", "hangup", "menu"):
            raise ValueError(f"'{self.action}' steps do not take 'next'")
        return self

    @property
    def action(self) -> str:
        return next(name for name in ACTIONS if getattr(self, name) is not None)

    def targets(self) -> list[tuple[tuple[str, ...], str]]:
        """Every step this one can lead to, with the field path that names it."""
        out: list[tuple[tuple[str, ...], str]] = []
        if self.next:
            out.append((("next",), self.next))
        if self.goto:
            out.append((("goto",), self.goto))
        if self.menu:
            out += [(("menu", "options", k), v) for k, v in self.menu.options.items()]
            out += [(("menu", f), getattr(self.menu, f)) for f in ("no_input", "no_match") if getattr(self.menu, f)]
        if self.gather and self.gather.no_input:
            out.append((("gather", "no_input"), self.gather.no_input))
        return out


ACTIONS = ("say", "menu", "gather", "goto", "hangup")


class Flow(_Model):
    name: str = Field(pattern=STEP_ID)
    description: str = ""
    entry: str
    variables: dict[str, str | int | float | bool] = Field(default_factory=dict)
    steps: dict[str, Step]
