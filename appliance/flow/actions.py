"""The one action interface: whatever carries out a flow engine's actions (the call runner,
the text simulator) gives one handler per action type, in a table checked when it is built.

An action without a handler is a bug of ours, not of the flow author, so it fails loudly:
a table missing an action type is refused when built, and an action of a type the engine
does not declare raises `UnknownAction` when performed.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, get_args

from appliance.flow import engine as fe

__all__ = ["ACTION_TYPES", "ActionTable", "Handler", "UnknownAction", "ignore"]

# Every action the engine can emit: the members of its `Action` union.
ACTION_TYPES: frozenset[type] = frozenset(get_args(fe.Action))

Handler = Callable[[Any], "Awaitable[None] | None"]


class UnknownAction(TypeError):
    """An action no handler is registered for: the engine and a performer disagree."""


class ActionTable:
    """Performs actions in order through a table keyed by action type; awaits async handlers."""

    def __init__(self, owner: str, handlers: Mapping[type, Handler]):
        missing = ACTION_TYPES - set(handlers)
        extra = set(handlers) - ACTION_TYPES
        if missing or extra:
            # Built once per call or simulation: a gap shows in the first test that makes one.
            names = ", ".join(sorted(t.__name__ for t in missing | extra))
            raise UnknownAction(f"{owner}: action table does not match the engine's actions ({names})")
        self.owner = owner
        self._handlers = dict(handlers)

    async def perform(self, actions: list[fe.Action]) -> None:
        for action in actions:
            handler = self._handlers.get(type(action))
            if handler is None:
                raise UnknownAction(f"{self.owner} has no handler for {type(action).__name__}")
            result = handler(action)
            if inspect.isawaitable(result):
                await result


def ignore(_: Any) -> None:
    """A handler for an action that has no effect here (said in the table, so it is a choice)."""
