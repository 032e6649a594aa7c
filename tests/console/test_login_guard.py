"""Failed-login limits in virtual time: per username, per address, a sliding window, bounded memory."""

from __future__ import annotations

import pytest

from appliance.console.login import LoginGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def fail(guard: LoginGuard, times: int, username: str = "ada", source: str = "10.0.0.1") -> None:
    for _ in range(times):
        assert guard.retry_after(username, source) is None
        guard.failed(username, source)


def test_a_username_is_blocked_after_attempts_failures_from_any_address(clock: Clock):
    guard = LoginGuard(3, 60, clock)
    for n in range(3):
        clock.now += 1
        fail(guard, 1, source=f"10.0.0.{n}")  # a different address each time
    assert guard.retry_after("ada", "10.0.0.99") == pytest.approx(58)
    assert guard.retry_after("bob", "10.0.0.99") is None  # others are not locked out with her


def test_an_address_is_blocked_after_attempts_failures_on_any_usernames(clock: Clock):
    guard = LoginGuard(3, 60, clock)
    for name in ("ada", "bob", "cy"):
        fail(guard, 1, username=name, source="10.0.0.9")
    assert guard.retry_after("dee", "10.0.0.9") == pytest.approx(60)
    assert guard.retry_after("dee", "10.0.0.10") is None


def test_the_window_slides(clock: Clock):
    guard = LoginGuard(2, 60, clock)
    fail(guard, 1)
    clock.now += 30
    fail(guard, 1)
    assert guard.retry_after("ada", "10.0.0.1") == pytest.approx(30)
    clock.now += 30  # the first failure leaves the window; one is still inside
    assert guard.retry_after("ada", "10.0.0.1") is None
    guard.failed("ada", "10.0.0.1")
    assert guard.retry_after("ada", "10.0.0.1") == pytest.approx(30)
    clock.now += 60
    assert guard.retry_after("ada", "10.0.0.1") is None


def test_success_clears_the_usernames_failures_but_not_the_addresses(clock: Clock):
    guard = LoginGuard(3, 60, clock)
    fail(guard, 2, source="10.0.0.1")
    guard.succeeded("ada", "10.0.0.1")
    fail(guard, 2, source="10.0.0.2")  # ada: 2 since her success
    assert guard.retry_after("ada", "10.0.0.3") is None
    fail(guard, 1, username="bob", source="10.0.0.1")  # the address's third failure
    assert guard.retry_after("cy", "10.0.0.1") is not None


def test_expired_entries_are_pruned_and_keys_are_capped(clock: Clock):
    guard = LoginGuard(3, 60, clock, max_keys=100)
    for n in range(500):
        guard.failed(f"user{n}", "10.0.0.1")
    assert len(guard) == 100
    # The newest keys are kept: the latest user, and the address failing all along.
    assert guard.retry_after("x", "10.0.0.1") is not None
    clock.now += 61
    guard.failed("late", "10.0.0.2")
    assert len(guard) == 2  # everything older than the window is gone


def test_huge_names_do_not_grow_memory(clock: Clock):
    guard = LoginGuard(2, 60, clock)
    fail(guard, 2, username="a" * 1_000_000)
    assert all(len(key[1]) <= 64 for key in guard._failures)
    assert guard.retry_after("a" * 1_000_000, "10.0.0.5") is not None


def test_nonsense_limits_are_refused(clock: Clock):
    with pytest.raises(ValueError):
        LoginGuard(0, 60, clock)
    with pytest.raises(ValueError):
        LoginGuard(3, 0, clock)
