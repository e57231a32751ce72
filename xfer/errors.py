"""The one error type for anything a user can cause.

The CLI prints its message alone (no traceback), so every message must name
the file or argument and say what is wrong with it.
"""

from __future__ import annotations


class XferError(Exception):
    """A problem with the user's input, files or arguments."""
