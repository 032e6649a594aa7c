"""Hiding a caller's secrets in what is stored or shown: keys pressed, card and account numbers.

Two strengths: `mask_digits` hides runs of four digits or more (what the API hides from
operators: PINs, account and card numbers); `mask_all_digits` hides every digit (what is
stored while a recording is paused for a card number, PCI DSS: not even the CVV survives).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MASK", "mask_all_digits", "mask_digits"]

MASK = "•"
# A run of digits this long in a variable or a tool argument is a PIN, an account or card number.
_SECRET_DIGITS = re.compile(r"\d{4,}")
_ANY_DIGIT = re.compile(r"\d")


def mask_digits(value: Any) -> Any:
    """`value` (a JSON-like tree) with each run of 4+ digits, and each number ≥ 1000, masked."""
    return _mask(value, _SECRET_DIGITS, 1000)


def mask_all_digits(value: Any) -> Any:
    """`value` (a JSON-like tree) with every digit and every number masked."""
    return _mask(value, _ANY_DIGIT, 0)


def _mask(value: Any, pattern: re.Pattern[str], smallest: int) -> Any:
    if isinstance(value, str):
        return pattern.sub(lambda m: MASK * len(m.group(0)), value)
    if isinstance(value, dict):
        return {key: _mask(item, pattern, smallest) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item, pattern, smallest) for item in value]
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) >= smallest:
        return MASK * len(str(abs(value)).replace(".", ""))
    return value
