"""The last pass of every recipe: the rewritten graph must run in ONNX Runtime *and* train in xfer's importer.

A graph ONNX Runtime accepts may still hold an op, a type or a shape the
importer refuses, and then ``xfer train`` would fail after surgery said
success. So surgery imports what it wrote, checks the importer's output
against ONNX Runtime's on one seeded batch, and runs one forward and
backward step in training mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xfer.errors import XferError
from xfer.graph import check_runs

if TYPE_CHECKING:
    import onnx

# max |torch - ORT| over the output's range: the importer's parity bar (1e-5) with room for a fresh head
AGREEMENT = 1e-4


def check_trains(model: onnx.ModelProto, channels: int, size: tuple[int, int], outputs: int) -> None:
    """``XferError`` unless ``model`` runs in ORT, agrees with xfer's importer and takes a training step there."""
    import torch

    from xfer.importer import to_torch  # the torch side: surgery itself runs without it

    x = np.random.default_rng(0).standard_normal((2, channels, *size)).astype(np.float32)
    ref = check_runs(model, channels, size, outputs, x)
    where = f"at input {channels}x{size[0]}x{size[1]}"
    try:
        net = to_torch(model)
    except XferError as e:
        raise XferError(f"rewritten graph cannot be imported for training ({where}): {e}") from None
    try:
        with torch.no_grad():
            got = net.eval()(torch.from_numpy(x)).float().numpy()
        net.train()
        y = net(torch.from_numpy(x))
        y.float().square().mean().backward()
    except XferError as e:
        raise XferError(f"rewritten graph does not train in xfer's importer ({where}): {e}") from None
    except (RuntimeError, ValueError, IndexError, TypeError) as e:  # torch's own errors name no node: say where
        raise XferError(f"rewritten graph does not train in xfer's importer ({where}): "
                        f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    err = float(np.abs(got - ref).max() / max(float(ref.max() - ref.min()), 1e-6))
    if not np.isfinite(err) or err > AGREEMENT:
        raise XferError(f"rewritten graph: xfer's importer and ONNX Runtime disagree ({where}): max error {err:.2e} "
                        f"of the output range")
    if tuple(y.shape) != (2, outputs):
        raise XferError(f"rewritten graph trains with output shape {tuple(y.shape)}, expected (2, {outputs})")
