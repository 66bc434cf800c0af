"""A text space that accepts any unicode string up to a length bound."""

from __future__ import annotations

import string
from typing import Any

from gymnasium.spaces import Text

# Sampling draws from printable ASCII plus a few multi-byte characters; ``contains``
# accepts every unicode string, since agents and tools produce arbitrary text.
_SAMPLE_CHARS = string.printable + "éüßçñøå€£¥—“”‘’…中文日本語한국어🙂"


class UnicodeText(Text):
    """Any ``str`` of length ``min_length..max_length``."""

    def __init__(self, max_length: int, min_length: int = 0, seed: Any = None) -> None:
        super().__init__(max_length=max_length, min_length=min_length, charset=_SAMPLE_CHARS, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"UnicodeText({self.min_length}, {self.max_length})"
