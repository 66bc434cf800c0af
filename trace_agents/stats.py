"""Small statistics used in reports: Wilson intervals, paired differences and annotation summaries."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def wilson(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (95% by default)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], z: float = 1.959964) -> dict[str, Any]:
    """Mean of ``a[k] - b[k]`` over the keys both have (the same seeds), with a normal 95% interval.

    Pairing removes the seed-to-seed spread both methods share, so it separates methods
    that unpaired intervals cannot. ``ci95`` is None with fewer than two pairs.
    """
    diffs = [a[k] - b[k] for k in a.keys() & b.keys()]
    n = len(diffs)
    if n == 0:
        return {"mean": 0.0, "ci95": None, "pairs": 0}
    mean = sum(diffs) / n
    if n < 2:
        return {"mean": mean, "ci95": None, "pairs": n}
    half = z * math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "pairs": n}


def summarize_annotations(annotations: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Mean of every numeric or boolean annotation (booleans as rates; None means not applicable)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for ann in annotations:
        for key, value in ann.items():
            if isinstance(value, bool) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                sums[key] = sums.get(key, 0.0) + float(value)
                counts[key] = counts.get(key, 0) + 1
    return {k: sums[k] / counts[k] for k in sorted(sums)}


def rounded(value: Any, digits: int = 6) -> Any:
    """``value`` with every float in it rounded to ``digits`` decimals, for output: a sum of
    float rewards comes out as 0.9999999999999999 where 1 is meant."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, Mapping):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value
