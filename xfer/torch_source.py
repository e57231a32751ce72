"""PyTorch sources, in the core's own torch: a TorchScript file, or a ``module:factory`` network and its state_dict.

PyTorch needs no environment of its own, so this side loads the network, draws
the parity inputs and writes ONNX with ``torch.onnx.export`` (the TorchScript
exporter: it needs nothing beyond torch, and takes TorchScript modules as well).
State dicts are read with ``weights_only=True``: a checkpoint never runs code.
"""

from __future__ import annotations

import importlib
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from xfer.errors import XferError


class FerCNN(nn.Module):
    """The network of ``what-the-face-classification`` 0.0.27 (its ``model.SimpleConvolutionalNetwork`` with the
    wheel's settings): 3 x (3x3 conv, tanh, 2x2 max-pool) of 28-56-112 channels, then FC 2000-304-7 (ReLU)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(1, 28, 3), nn.Conv2d(28, 56, 3), nn.Conv2d(56, 112, 3)
        self.pool1, self.pool2, self.pool3 = nn.MaxPool2d(2, 2), nn.MaxPool2d(2, 2), nn.MaxPool2d(2, 2)
        self.fc1, self.fc2, self.fc3 = nn.Linear(112 * 4 * 4, 2000), nn.Linear(2000, 304), nn.Linear(304, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, pool in ((self.conv1, self.pool1), (self.conv2, self.pool2), (self.conv3, self.pool3)):
            x = pool(torch.tanh(conv(x)))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc3(torch.relu(self.fc2(x)))


def fer_cnn() -> nn.Module:
    return FerCNN()


@dataclass
class Loaded:
    module: nn.Module
    what: str


def _factory(spec: str) -> nn.Module:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise XferError(f"--factory: expected module:function, got '{spec}'")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise XferError(f"--factory {spec}: cannot find it ({type(e).__name__}: {e})") from None
    net = fn()
    if not isinstance(net, nn.Module):
        raise XferError(f"--factory {spec}: expected it to return a torch.nn.Module, got {type(net).__name__}")
    return net


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch's unpickler raises many kinds for a file it refuses
        raise XferError(f"{path}: not a state_dict torch can read with weights_only=True "
                        f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise XferError(f"{path}: expected a state_dict (names -> tensors), got {type(state).__name__}")
    return state


def load(source: str | Path, factory: str | None) -> Loaded:
    """The network: ``factory()`` with the state_dict at ``source``, or the TorchScript module at ``source``."""
    path = Path(source)
    if not path.is_file():
        raise XferError(f"{path}: no such file")
    if factory:
        net = _factory(factory)
        try:
            net.load_state_dict(_state_dict(path))
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise XferError(f"{path}: does not fit {factory} ({(lines[1:] or lines)[0][:200]})") from None
        return Loaded(net.eval(), f"{factory} + {path.name}")
    try:
        return Loaded(torch.jit.load(str(path), map_location="cpu").eval(), f"TorchScript {path.name}")
    except Exception:  # noqa: BLE001 -- torch.jit.load's failures on a file that is not TorchScript
        hint = " (a state_dict? then name its network with --factory module:function)" if path.suffix in (
            ".pth", ".pt", ".bin") else ""
        raise XferError(f"{path}: not a TorchScript file{hint}") from None


def export(loaded: Loaded, input_shape: tuple[int, int, int], opset: int, x: np.ndarray) -> tuple[bytes, np.ndarray]:
    """(ONNX bytes with a dynamic batch, the network's own outputs on ``x``)."""
    net = loaded.module
    buf = io.BytesIO()
    example = torch.zeros((2, *input_shape))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (example,), buf, opset_version=opset,  # type: ignore[arg-type]
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False)
            y = net(torch.from_numpy(x))
    except Exception as e:  # noqa: BLE001 -- the exporter's and the network's failures are the source's
        raise XferError(f"{loaded.what}: torch.onnx cannot export it for input {list(input_shape)} "
                        f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]})") from None
    if isinstance(y, (tuple, list)):
        y = y[0]
    return buf.getvalue(), y.detach().float().numpy()
