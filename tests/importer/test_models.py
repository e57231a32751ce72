"""Whole models: ours, plain ONNX CNNs, and one exported by PyTorch, against ONNX Runtime."""

import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cnn_zoo import VARIANTS, make_cnn
from xfer import to_torch, write_back
from xfer.surgery import MODES, apply


def ort_run(m, x):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {m.graph.input[0].name: x})[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_plain_cnns(variant):
    m = make_cnn(**variant)
    x = np.random.default_rng(1).standard_normal((4, variant.get("channels", 1), 28, 28)).astype(np.float32)
    with torch.no_grad():
        got = to_torch(m).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ort_run(m, x), atol=1e-5, rtol=1e-5)


def test_pytorch_exported_model():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Dropout(0.2), torch.nn.Linear(4 * 7 * 7, 10), torch.nn.Tanh(),
                              torch.nn.Linear(10, 5)).eval()
    f = io.BytesIO()
    torch.onnx.export(net, torch.zeros(1, 3, 16, 16), f, dynamo=False, input_names=["input"], output_names=["out"],
                      dynamic_axes={"input": {0: "N"}})
    m = onnx.load_from_string(f.getvalue())
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(to_torch(m).eval()(torch.from_numpy(x)).numpy(), net(torch.from_numpy(x)).numpy(),
                                   atol=1e-5)
    for mode in MODES:
        rewritten = apply(mode, m, ["a", "b", "c"], 3, (16, 16))
        assert ort_run(rewritten, x).shape == (2, 3)


@pytest.mark.parametrize("mode", MODES)
def test_write_back_roundtrip_after_training_step(lenet_onnx, mode):
    src = onnx.load(lenet_onnx)
    m = apply(mode, src, [str(i) for i in range(7)], 1, (32, 32))
    mod = to_torch(m)
    opt = torch.optim.SGD([p for p in mod.parameters() if p.requires_grad], lr=0.01)
    x = torch.randn(8, 1, 32, 32)
    loss = torch.nn.functional.cross_entropy(mod(x), torch.arange(8) % 7)
    loss.backward()
    opt.step()
    m2 = write_back(mod, m)
    with torch.no_grad():
        np.testing.assert_allclose(ort_run(m2, x.numpy()), mod.eval()(x).numpy(), atol=1e-5, rtol=1e-5)
