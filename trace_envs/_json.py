"""JSON on the hot path: orjson (about 10x faster than the stdlib on tool results).

``dumps`` falls back to the stdlib for the values orjson refuses (integers beyond 64
bits, non-string keys), so encoding never fails on a value the stdlib would accept.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_STD = json.JSONEncoder(check_circular=False, separators=(",", ":"))
_STD_SORTED = json.JSONEncoder(check_circular=False, separators=(",", ":"), sort_keys=True)
JSONDecodeError = orjson.JSONDecodeError  # a ValueError subclass


def dumps(value: Any) -> str:
    """Compact JSON text."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _STD.encode(value)


def canonical(value: Any) -> str:
    """Compact JSON text with sorted keys: equal values give equal text."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return _STD_SORTED.encode(value)


def loads(text: str) -> Any:
    """Parse JSON; raises ValueError (orjson.JSONDecodeError) on bad, NaN or 1,024-deep input."""
    return orjson.loads(text)
