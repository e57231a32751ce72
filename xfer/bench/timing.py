"""The one timing helper every pass uses, and the record of a timed path."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from xfer.records import JSONValue, Record

T = TypeVar("T")


def timed(fn: Callable[[], T], repeat: int, warmup: int = 1) -> tuple[list[float], T]:
    """Seconds of each of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones, and the last call's result."""
    out: Any = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


@dataclass
class PathResult(Record):
    """One timed path of the test pass: its times over ``runs`` passes of ``images`` images, and what it measured.

    ``details`` holds what only this path has (the stream's schedule, a floor's byte count, ...); in JSON its
    keys sit beside the times, as they always have.
    """

    median_s: float
    min_s: float
    max_s: float
    runs: int
    images_per_s: float
    accuracy: float | None = None
    peak_rss_mb: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, times: list[float], n: int, accuracy: float | None = None, **details: Any) -> PathResult:
        """The record of ``times`` (seconds per pass of ``n`` images)."""
        med = statistics.median(times)
        return cls(med, min(times), max(times), len(times), n / med if med > 0 else float("inf"), accuracy,
                   details.pop("peak_rss_mb", None), details)

    @classmethod
    def estimate(cls, seconds: float, n: int, runs: int = 0, accuracy: float | None = None, **details: Any) -> PathResult:
        """A path known by one number (a floor computed, not timed; a time scaled from a prefix)."""
        return cls(seconds, seconds, seconds, runs, n / seconds if seconds > 0 else float("inf"), accuracy, None, details)

    def to_json(self) -> dict[str, JSONValue]:
        out = super().to_json()
        return out | out.pop("details", {})

    @classmethod
    def from_json(cls, data: dict[str, JSONValue]) -> PathResult:
        known = {"median_s", "min_s", "max_s", "runs", "images_per_s", "accuracy", "peak_rss_mb"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   details={k: v for k, v in data.items() if k not in known})
