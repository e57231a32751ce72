"""xfer: move a trained network from one framework and task to another, through ONNX.

Public API: ``to_torch`` / ``write_back`` (ONNX <-> PyTorch, training in
between; ``supported_ops`` lists the ops it converts) and ``preprocess`` (the fused C++ image kernel).
"""

from __future__ import annotations

from typing import Any

from xfer.errors import XferError

# Bound eagerly: the function, not the submodule of the same name, is `xfer.preprocess`.
from xfer.preprocess import preprocess, preprocess_reference  # noqa: E402

__version__ = "0.1.0"
__all__ = ["XferError", "__version__", "preprocess", "preprocess_reference", "supported_ops", "to_torch", "write_back"]


def __getattr__(name: str) -> Any:
    # Lazy: `import xfer` stays cheap (the CLI does not pay for torch unless it trains).
    if name in ("to_torch", "write_back", "supported_ops"):
        from xfer import importer

        return getattr(importer, name)
    raise AttributeError(f"module 'xfer' has no attribute '{name}'")
