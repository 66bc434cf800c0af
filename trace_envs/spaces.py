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


# -- shared memory for AsyncVectorEnv ---------------------------------------------------
# Gymnasium's Text shared memory decodes the buffer once, when the vector env is built,
# and can only hold characters of the space's charset. UnicodeText stores each env's
# observation as a length plus UTF-32 code units, and reads through a live sequence
# that decodes on access; AsyncVectorEnv deep-copies it (copy=True) into a plain tuple.
import collections.abc  # noqa: E402
import multiprocessing as mp  # noqa: E402

import numpy as np  # noqa: E402
from gymnasium.vector.utils import shared_memory as _shm  # noqa: E402


class LiveTexts(collections.abc.Sequence):
    """The current observations of an async vector env, decoded from shared memory."""

    def __init__(self, buffer: Any, max_length: int, n: int) -> None:
        self._rows = np.frombuffer(buffer.get_obj(), dtype=np.uint32).reshape((n, max_length + 1))

    def __len__(self) -> int:
        return self._rows.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        row = self._rows[index]
        return row[1 : 1 + int(row[0])].tobytes().decode("utf-32-le", "surrogatepass")

    def __deepcopy__(self, memo: dict) -> tuple[str, ...]:
        return tuple(self)

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, collections.abc.Sequence) else other)

    def __repr__(self) -> str:
        return f"LiveTexts({tuple(self)!r})"


@_shm.create_shared_memory.register(UnicodeText)
def _create_shared(space: UnicodeText, n: int = 1, ctx: Any = mp) -> Any:
    return ctx.Array("I", n * (space.max_length + 1))


@_shm.read_from_shared_memory.register(UnicodeText)
def _read_shared(space: UnicodeText, shared_memory: Any, n: int = 1) -> LiveTexts:
    return LiveTexts(shared_memory, space.max_length, n)


@_shm.write_to_shared_memory.register(UnicodeText)
def _write_shared(space: UnicodeText, index: int, value: str, shared_memory: Any) -> None:
    codes = np.frombuffer(value.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if len(codes) > space.max_length:
        raise ValueError(f"observation of {len(codes)} characters exceeds max_length {space.max_length}")
    rows = np.frombuffer(shared_memory.get_obj(), dtype=np.uint32).reshape((-1, space.max_length + 1))
    rows[index, 0] = len(codes)
    rows[index, 1 : 1 + len(codes)] = codes
