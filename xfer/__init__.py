"""xfer: move a trained network from one framework and task to another, through ONNX."""

from __future__ import annotations

from xfer.errors import XferError

__version__ = "0.1.0"
__all__ = ["XferError", "__version__"]
