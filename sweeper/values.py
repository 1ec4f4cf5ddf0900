"""One way to write a value for people, the same in `best`, `verify`, `report`, the live display and W&B
run names: a positive float (a swept learning rate, say) as its value to two significant digits with its
log2 beside it, `0.0039 (2^-8.0)`; whole numbers and everything else as they are. JSON outputs keep plain
numbers and never go through here."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any


def number_text(x: float) -> str:
    """Two significant digits, positional between 1e-5 and 1e6 (0.0043, 0.000061, 1200), e-notation
    outside (3.1e-07); whole numbers in full."""
    if not math.isfinite(x):
        return str(x)
    if float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    rounded = float(f"{x:.2g}")
    if rounded.is_integer() and abs(rounded) < 1e6:
        return str(int(rounded))
    if 1e-5 <= abs(x) < 1e6:
        return format(Decimal(repr(rounded)), "f")
    return f"{rounded:.2g}"


def log2_text(log2: float) -> str:
    """`2^-8.0`, `2^-7.25`, `2^-7.85`: two decimals at most, one at least."""
    text = f"{log2:.2f}"
    text = text[:-1] if text.endswith("0") else text
    return "2^0.0" if text == "-0.0" else f"2^{text}"


def from_log2(log2: float) -> str:
    """A value known by its log2: `0.0039 (2^-8.0)`."""
    return f"{number_text(2.0**log2)} ({log2_text(log2)})"


def value_text(value: Any) -> str:
    """A positive float as `0.0039 (2^-8.0)`; ints, bools, strings and other numbers as they are."""
    if isinstance(value, float) and not isinstance(value, bool):
        if value > 0 and math.isfinite(value):
            return from_log2(math.log2(value))
        return number_text(value)
    return str(value)
