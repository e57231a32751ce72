"""The onnx wheel's own backend test models (PyTorch-converted layers and operators, opset 6 to 9), end to end.

These files are old: their op versions predate the converters (``Add`` with
``broadcast``, ``BatchNormalization`` with ``spatial``), so they pass only if
the importer brings them to an opset it implements first.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from xfer.importer import to_torch
from xfer.importer.registry import model_opset

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
MODELS = sorted(glob.glob(os.path.join(DATA, "pytorch-converted", "*")) + glob.glob(os.path.join(DATA, "pytorch-operator", "*")))


def _tensors(folder: str, kind: str) -> list[np.ndarray]:
    return [numpy_helper.to_array(onnx.load_tensor(f)) for f in sorted(glob.glob(os.path.join(folder, f"{kind}_*.pb")))]


def test_both_collections_are_there():
    kinds = {os.path.basename(os.path.dirname(m)) for m in MODELS}
    assert kinds == {"pytorch-converted", "pytorch-operator"} and len(MODELS) >= 110


@pytest.mark.parametrize("folder", MODELS, ids=[os.path.basename(m) for m in MODELS])
def test_backend_model(folder):
    model = onnx.load(os.path.join(folder, "model.onnx"))
    module = to_torch(model).eval()
    for data in sorted(glob.glob(os.path.join(folder, "test_data_set_*"))):
        with torch.no_grad():
            got = module(*[torch.from_numpy(np.array(x)) for x in _tensors(data, "input")])
        got = got if isinstance(got, tuple) else (got,)
        expected = _tensors(data, "output")
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g.numpy(), e, rtol=1e-3, atol=1e-5)


def test_old_opsets_are_converted_not_refused():
    model = onnx.load(os.path.join(DATA, "pytorch-converted", "test_BatchNorm2d_eval", "model.onnx"))
    module = to_torch(model)
    assert model_opset(model) == module.source_opset == 6 and module.opset > 6
