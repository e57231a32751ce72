"""Plain-text tables for the terminal (and Markdown for reports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def spread(mean: float, std: float, n: int, digits: int = 3) -> str:
    """``mean ± std`` over ``n`` runs; the mean alone for one run (a spread of one number is not zero, it is unknown)."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n >= 2 else f"{mean:.{digits}f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def _numeric(s: str) -> bool:
    t = s.replace(",", "").replace("%", "").replace("±", "").replace(" ", "").replace("x", "")
    try:
        float(t)
        return True
    except ValueError:
        return False


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
