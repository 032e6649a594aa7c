"""The wallboard's updates: only the rows that changed, and a console that applies them holds the
board the desk built."""

from __future__ import annotations

from appliance.operators.protocol import Wallboard, apply, diff


def _board(at: str, calls: list[dict], queues: list[dict], operators: list[dict]) -> Wallboard:
    return Wallboard(at=at, calls=calls, queues=queues, operators=operators)


def test_an_unchanged_board_sends_nothing() -> None:
    board = _board("t1", [{"call": "CA1", "step": "menu", "started": 1.0}], [{"queue": "billing", "waiting": 0}],
                   [{"operator": "alice", "state": "available", "since": 5.0}])
    again = _board("t2", [dict(r) for r in board.calls], [dict(r) for r in board.queues],
                   [dict(r) for r in board.operators])

    assert diff(board, again) is None


def test_an_update_holds_only_changed_rows_and_the_keys_of_rows_gone() -> None:
    old = _board("t1",
                 [{"call": "CA1", "step": "menu", "started": 1.0}, {"call": "CA2", "step": "menu", "started": 2.0}],
                 [{"queue": "billing", "waiting": 1}, {"queue": "sales", "waiting": 0}],
                 [{"operator": "alice", "state": "available", "since": 5.0}])
    new = _board("t2",
                 [{"call": "CA2", "step": "queue", "started": 2.0}, {"call": "CA3", "step": "menu", "started": 3.0}],
                 [{"queue": "billing", "waiting": 1}, {"queue": "sales", "waiting": 1}],
                 [])

    update = diff(old, new)

    assert update is not None and update.at == "t2"
    assert update.calls == [{"call": "CA2", "step": "queue", "started": 2.0},
                            {"call": "CA3", "step": "menu", "started": 3.0}]
    assert update.calls_gone == ["CA1"]
    assert update.queues == [{"queue": "sales", "waiting": 1}] and update.queues_gone == []
    assert update.operators == [] and update.operators_gone == ["alice"]
    shown = apply(old, update)
    assert sorted(shown.calls, key=lambda r: r["call"]) == new.calls
    assert sorted(shown.queues, key=lambda r: r["queue"]) == new.queues
    assert shown.operators == [] and shown.at == "t2"
