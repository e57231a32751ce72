"""Every converter against ONNX Runtime, one-node graph by one-node graph."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from xfer.errors import XferError
from xfer.importer import to_torch, write_back

RNG = np.random.default_rng(0)


def one_node(op, inputs, attrs=None, inits=None, out_shape=None, opset=17, n_out=1, extra_nodes=()):
    """A graph of one ``op`` node: ``inputs`` are (name, array) fed at run time; ``inits`` become initializers."""
    inits = inits or {}
    node = helper.make_node(op, [n for n, _ in inputs] + list(inits), ["y"], **(attrs or {}))
    g = helper.make_graph(
        list(extra_nodes) + [node], "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def compare(m, inputs, atol=1e-5):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {n: a for n, a in inputs})[0]
    mod = to_torch(m).eval()
    with torch.no_grad():
        got = mod(*[torch.from_numpy(a) for _, a in inputs]).numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=atol, rtol=1e-5)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3]},
    {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]},
    {"kernel_shape": [3, 3], "pads": [0, 1, 2, 1], "strides": [2, 1]},
    {"kernel_shape": [3, 3], "dilations": [2, 2], "group": 2},
])
def test_conv(attrs):
    g = attrs.get("group", 1)
    x = ("x", f32(2, 4, 9, 9))
    compare(one_node("Conv", [x], attrs, {"w": f32(6, 4 // g, 3 if attrs["kernel_shape"][0] == 3 else 5,
                                                   3 if attrs["kernel_shape"][0] == 3 else 5), "b": f32(6)}), [x])


@pytest.mark.parametrize("attrs", [{}, {"transB": 1}, {"transB": 1, "alpha": 0.5, "beta": 2.0}, {"transA": 1}])
def test_gemm(attrs):
    a = f32(3, 5) if not attrs.get("transA") else f32(5, 3)
    w = f32(4, 5) if attrs.get("transB") else f32(5, 4)
    compare(one_node("Gemm", [("a", a)], attrs, {"w": w, "c": f32(4)}), [("a", a)])


def test_matmul_add():
    x = ("x", f32(3, 5))
    compare(one_node("MatMul", [x], {}, {"w": f32(5, 2)}), [x])
    compare(one_node("Add", [x], {}, {"b": f32(5)}), [x])


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_binary(op):
    a, b = ("a", f32(2, 3, 4)), ("b", np.abs(f32(3, 4)) + 0.5)
    compare(one_node(op, [a, b]), [a, b])


@pytest.mark.parametrize("op", ["Relu", "Tanh", "Sigmoid", "Identity", "LeakyRelu"])
def test_activations(op):
    x = ("x", f32(3, 7))
    compare(one_node(op, [x]), [x])


@pytest.mark.parametrize("opset,axis", [(17, -1), (17, 1), (11, 1), (11, 2)])
def test_softmax(opset, axis):
    x = ("x", f32(2, 3, 4))
    compare(one_node("Softmax", [x], {"axis": axis}, opset=opset), [x])


def test_flatten_reshape_concat_dropout():
    x = ("x", f32(2, 3, 4, 5))
    compare(one_node("Flatten", [x], {"axis": 2}), [x])
    compare(one_node("Flatten", [x]), [x])
    z = ("z", f32(2, 3, 4, 5))
    compare(one_node("Concat", [x, z], {"axis": 1}), [x, z])
    compare(one_node("Dropout", [x], {}, opset=17), [x])


def test_reshape_with_shape_initializer():
    x = ("x", f32(2, 3, 4))
    node = helper.make_node("Reshape", ["x", "s"], ["y"])
    g = helper.make_graph([node], "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x[1].shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array([0, -1], np.int64), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    compare(m, [x])


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "pads": [0, 1, 1, 0]},
])
def test_pools(op, attrs):
    x = ("x", f32(2, 3, 9, 9))
    compare(one_node(op, [x], attrs), [x])


def test_avgpool_count_include_pad():
    x = ("x", f32(1, 2, 6, 6))
    compare(one_node("AveragePool", [x], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1}), [x])


def test_batchnorm_and_global_pool():
    x = ("x", f32(2, 3, 5, 5))
    compare(one_node("BatchNormalization", [x], {"epsilon": 1e-3},
                     {"s": f32(3), "b": f32(3), "m": f32(3), "v": np.abs(f32(3)) + 0.5}), [x])
    compare(one_node("GlobalAveragePool", [x]), [x])


def test_unsupported_op_names_op_and_node():
    x = ("x", f32(3))
    m = one_node("Hardmax", [x])
    m.graph.node[0].name = "my_hardmax"
    with pytest.raises(XferError, match=r"'my_hardmax': unsupported ONNX op Hardmax"):
        to_torch(m)


def test_parameters_frozen_and_write_back():
    x = ("x", f32(2, 5))
    m = one_node("Gemm", [x], {"transB": 1}, {"w": f32(3, 5), "c": f32(3)})
    mod = to_torch(m, frozen={"w"})
    params = dict(mod.named_parameters())
    assert sum(p.requires_grad for p in params.values()) == 1
    assert isinstance(mod.tensor("w"), torch.nn.Parameter) and not mod.tensor("w").requires_grad
    with torch.no_grad():
        mod.tensor("c").add_(1.0)
    m2 = write_back(mod, m)
    np.testing.assert_array_equal(numpy_helper.to_array(m2.graph.initializer[1]),
                                  numpy_helper.to_array(m.graph.initializer[1]) + 1.0)
    np.testing.assert_array_equal(numpy_helper.to_array(m2.graph.initializer[0]),
                                  numpy_helper.to_array(m.graph.initializer[0]))


@pytest.mark.parametrize("attrs", [{}, {"align_corners": 1}, {"padding_mode": "border"}, {"padding_mode": "reflection"},
                                   {"mode": "bicubic"}])
def test_grid_sample(attrs):
    """Grids reaching outside [-1, 1] too, so every padding mode is exercised."""
    x, grid = ("x", f32(2, 3, 7, 9)), ("grid", (RNG.random((2, 5, 6, 2)) * 2.6 - 1.3).astype(np.float32))
    compare(one_node("GridSample", [x, grid], attrs), [x, grid], atol=1e-4)


def test_grid_sample_opset_20_names_and_refusals():
    x, grid = ("x", f32(1, 2, 5, 5)), ("grid", (RNG.random((1, 4, 4, 2)) * 2 - 1).astype(np.float32))
    compare(one_node("GridSample", [x, grid], {"mode": "linear"}, opset=20), [x, grid])
    with pytest.raises(XferError, match="mode='nearest'"):
        to_torch(one_node("GridSample", [x, grid], {"mode": "nearest"}))
