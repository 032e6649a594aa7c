"""Failed-login limits: so many failures per username, and per source address, per sliding window.

Per username stops guessing one account's password from many addresses; per address stops
one address trying a password on many accounts. Pure (an injected clock) and bounded in memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

# Each tracked key costs a deque of at most `attempts` floats; 10,000 keys is a few MiB at most.
MAX_KEYS = 10_000
# Longer names are no account's (usernames are at most 32 characters); cut so a flood of
# megabyte usernames cannot grow memory beyond MAX_KEYS small keys.
MAX_NAME = 64

Key = tuple[str, str]


class LoginGuard:
    def __init__(self, attempts: int, window_s: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS):
        if attempts < 1 or window_s <= 0:
            raise ValueError("LoginGuard needs attempts >= 1 and window_s > 0")
        self.attempts = attempts
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        # Key → times of its latest failures (only the last `attempts` matter), least recently
        # failed first: expired and evicted keys are always at the front.
        self._failures: OrderedDict[Key, deque[float]] = OrderedDict()

    def retry_after(self, username: str, source: str) -> float | None:
        """Seconds until this username from this source may try again; None: it may try now."""
        now = self.clock()
        waits = [self._wait(key, now) for key in _keys(username, source)]
        blocked = [w for w in waits if w is not None]
        return max(blocked) if blocked else None

    def failed(self, username: str, source: str) -> None:
        now = self.clock()
        self._prune(now)
        for key in _keys(username, source):
            times = self._failures.pop(key, None) or deque(maxlen=self.attempts)
            times.append(now)
            self._failures[key] = times  # to the end: the most recent
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def succeeded(self, username: str, source: str) -> None:
        # The address keeps its failures: one right password must not reset an address that
        # is trying many accounts.
        self._failures.pop(_keys(username, source)[0], None)

    def __len__(self) -> int:
        return len(self._failures)

    def _wait(self, key: Key, now: float) -> float | None:
        times = self._failures.get(key)
        # Blocked while the attempts-th latest failure is still inside the window.
        if times is None or len(times) < self.attempts:
            return None
        wait = times[0] + self.window_s - now
        return wait if wait > 0 else None

    def _prune(self, now: float) -> None:
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times[-1] + self.window_s > now:
                break
            del self._failures[key]


def _keys(username: str, source: str) -> tuple[Key, Key]:
    return ("user", username[:MAX_NAME]), ("source", source[:MAX_NAME])
