"""Inputs no one here made: the nine model-zoo CNNs of the onnx wheel, a PyTorch export, an NHWC graph.

Each imports into PyTorch with ONNX Runtime's output, survives surgery in
every mode at its native size and at 128x128 (the rewritten graph runs in
ONNX Runtime at a batch of 2), and trains and benches from the command line.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper

from cnn_zoo import export_small_resnet, make_cnn, make_nhwc_cnn, zoo_model
from test_errors import assert_clean_error, xfer
from xfer.errors import XferError
from xfer.graph import initializers
from xfer.importer import to_torch
from xfer.surgery import MODES, apply, get_frozen
from xfer.zoo import ZOO, load_zoo

CLASSES = ["a", "b", "c", "d", "e", "f", "g"]


def ort_run(m, x, outputs=None):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(outputs, {sess.get_inputs()[0].name: x})


def with_logits(m):
    """The model with the input of its final Softmax exposed as a second output (softmax saturates, logits do not)."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    soft = next((n for n in out.graph.node if n.output[0] == out.graph.output[0].name and n.op_type == "Softmax"), None)
    if soft is not None:
        out.graph.output.append(helper.make_empty_tensor_value_info(soft.input[0]))
    return out


@pytest.mark.parametrize("name", ZOO)
def test_zoo_imports_with_onnxruntime_parity(name):
    m = with_logits(zoo_model(name))
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(1).standard_normal(dims).astype(np.float32)
    refs = ort_run(m, x)
    with torch.no_grad():
        got = to_torch(m).eval()(torch.from_numpy(x))
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(refs)
    for g, r in zip(got, refs):
        span = float(r.max() - r.min()) or 1.0
        assert g.shape == r.shape
        assert np.abs(g.numpy() - r).max() <= 1e-4 * span


def test_load_zoo_is_seeded_and_checked():
    a, b = initializers(load_zoo("squeezenet", seed=3)), initializers(load_zoo("squeezenet", seed=3))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(n.op_type == "ConstantOfShape" for n in load_zoo("squeezenet").graph.node)
    with pytest.raises(XferError, match="unknown zoo model"):
        load_zoo("lenet")


@pytest.mark.parametrize("size", [None, 128], ids=["native", "128"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ZOO)
def test_zoo_surgery_runs_at_batch_2(name, mode, size):
    src = zoo_model(name)
    s = size or src.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    m = apply(mode, src, CLASSES, 3, (s, s), head=(64, 32))
    (y,) = ort_run(m, np.random.default_rng(0).standard_normal((2, 3, s, s)).astype(np.float32))
    assert y.shape == (2, 7) and np.isfinite(y).all()
    frozen = get_frozen(m)
    if mode in ("scratch", "finetune"):
        assert not frozen
    else:
        assert frozen
        src_inits, new = initializers(src), initializers(m)
        same = [k for k in frozen if k in src_inits]
        assert same and all(np.array_equal(new[k], src_inits[k]) for k in same[:5])


def test_too_small_input_is_one_line_and_writes_nothing(tmp_path):
    src = tmp_path / "squeezenet.onnx"
    onnx.save(zoo_model("squeezenet"), str(src))
    out = tmp_path / "small.onnx"
    r = xfer("surgery", "--source", src, "--mode", "frozen", "--input-size", 8, "--channels", 3, "--out", out)
    assert_clean_error(r, "too small")
    assert not out.exists()


@pytest.mark.parametrize("mode", MODES)
def test_constant_reshape_head_follows_new_input_size(mode):
    src = make_cnn(head="matmul", flatten="reshape_const", size=28)
    m = apply(mode, src, CLASSES, 1, (32, 32))
    (y,) = ort_run(m, np.zeros((2, 1, 32, 32), np.float32))
    assert y.shape == (2, 7)


def test_fixed_batch_constant_reshape_becomes_dynamic():
    src = make_cnn(head="gemm", flatten="reshape_const", size=28)
    init = next(t for t in src.graph.initializer if t.name == "shape")
    init.CopyFrom(onnx.numpy_helper.from_array(np.array([1, 16 * 4 * 4], np.int64), "shape"))
    src.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    for mode in MODES:
        (y,) = ort_run(apply(mode, src, CLASSES, 1, (40, 40)), np.zeros((3, 1, 40, 40), np.float32))
        assert y.shape == (3, 7)


def test_nhwc_graph_imports_and_becomes_nchw():
    m = make_nhwc_cnn(size=16)
    x = np.random.default_rng(0).standard_normal((1, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(to_torch(m).eval()(torch.from_numpy(x)).numpy(), ort_run(m, x)[0], atol=1e-5, rtol=1e-5)
    for mode in MODES:
        r = apply(mode, m, CLASSES, 3, (24, 24))
        assert [d.dim_param or d.dim_value for d in r.graph.input[0].type.tensor_type.shape.dim] == ["N", 3, 24, 24]
        assert ort_run(r, np.zeros((2, 3, 24, 24), np.float32))[0].shape == (2, 7)


def test_pytorch_export_imports_and_survives_surgery(tmp_path):
    net = export_small_resnet(tmp_path / "resnet.onnx", size=16)
    m = onnx.load(str(tmp_path / "resnet.onnx"))
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        np.testing.assert_allclose(to_torch(m).eval()(x).numpy(), net(x).numpy(), atol=1e-5, rtol=1e-4)
    for mode in MODES:
        assert ort_run(apply(mode, m, CLASSES, 3, (32, 32)), np.zeros((2, 3, 32, 32), np.float32))[0].shape == (2, 7)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """A tiny class-per-folder set of RGB images (3 classes x 8)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos") / "set"
    rng = np.random.default_rng(0)
    for c, name in enumerate(["red", "green", "blue"]):
        d = root / name
        d.mkdir(parents=True)
        for i in range(8):
            a = (rng.random((40, 40, 3)) * 80).astype(np.uint8)
            a[..., c] += 150
            Image.fromarray(a).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("source,mode", [("squeezenet", "frozen"), ("resnet50", "finetune"), ("pytorch", "frozen"),
                                         ("nhwc", "finetune")])
def test_train_and_bench_from_the_command_line(source, mode, photo_folder, tmp_path):
    src = tmp_path / f"{source}.onnx"
    if source == "pytorch":
        export_small_resnet(src, size=16)
    elif source == "nhwc":
        onnx.save(make_nhwc_cnn(size=16), str(src))
    else:
        r = xfer("zoo", source, "--out", src)
        assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    r = xfer("train", "--source", src, "--mode", mode, "--input-size", 64, "--channels", 3, "--data", photo_folder,
             "--epochs", 1, "--batch-size", 8, "--out", out)
    assert r.returncode == 0, r.stderr
    assert (out / f"{mode}.onnx").is_file()
    r = xfer("bench", out / f"{mode}.onnx", "--data", photo_folder, "--repeat", 1, "--no-baselines")
    assert r.returncode == 0, r.stderr
    assert (out / f"{mode}.bench.json").is_file()
