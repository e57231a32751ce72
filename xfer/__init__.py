"""xfer: move a trained network from one framework and task to another, through ONNX.

Public API: ``to_torch`` / ``write_back`` (ONNX <-> PyTorch, training in
between) and ``preprocess`` (the fused C++ image kernel).
"""

from __future__ import annotations

from typing import Any

from xfer.errors import XferError

__version__ = "0.1.0"
__all__ = ["XferError", "__version__", "preprocess", "preprocess_reference", "to_torch", "write_back"]


def __getattr__(name: str) -> Any:
    # Lazy: `import xfer` stays cheap (the CLI does not pay for torch unless it trains).
    if name in ("to_torch", "write_back"):
        from xfer import importer

        return getattr(importer, name)
    if name in ("preprocess", "preprocess_reference"):
        from xfer import preprocess as pre

        return getattr(pre, name)
    raise AttributeError(f"module 'xfer' has no attribute '{name}'")
