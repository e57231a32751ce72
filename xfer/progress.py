"""Progress bars (rate and ETA) that stay quiet when output is not a terminal and XFER_PROGRESS is unset."""

from __future__ import annotations

import os
import sys
from typing import Any


def enabled() -> bool:
    env = os.environ.get("XFER_PROGRESS")
    if env is not None:
        return env not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def bar(total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False, **kw: Any):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=disable or not enabled(), dynamic_ncols=True,
                leave=False, **kw)
