"""The one way a stage reports while it works: bars with rate and ETA, and status lines.

Stages never print: they return records, and tell the person waiting what is
happening through ``bar`` and ``say``. Bars stay quiet when output is not a
terminal and XFER_PROGRESS is unset; status lines go to standard error, and a
caller that runs a stage as one step of its own (a study reusing a training
run) silences both with ``quiet()``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_QUIET = [0]


def enabled() -> bool:
    if _QUIET[0]:
        return False
    env = os.environ.get("XFER_PROGRESS")
    if env is not None:
        return env not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def bar(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False, **kw: Any) -> Any:
    """A tqdm bar (rate, ETA) on standard error; a silent one when progress is off."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=disable or not enabled(), dynamic_ncols=True,
                leave=False, **kw)


def say(message: str) -> None:
    """One status line for the person waiting (standard error), unless inside ``quiet()``."""
    if not _QUIET[0]:
        print(message, file=sys.stderr, flush=True)


@contextmanager
def quiet() -> Iterator[None]:
    """No bars and no status lines from the stages run inside."""
    _QUIET[0] += 1
    try:
        yield
    finally:
        _QUIET[0] -= 1
