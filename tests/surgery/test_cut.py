import pytest
from onnx import TensorProto, helper

from xfer.errors import XferError
from xfer.surgery import dense_layers, find_boundary
from xfer.surgery.cut import activation_of


def test_boundary_found(cnn):
    b = find_boundary(cnn)
    assert b.flatten.op_type in ("Flatten", "Reshape")
    assert b.first_fc.op_type in ("Gemm", "MatMul")
    assert b.features == "p2"
    layers = dense_layers(cnn, b)
    assert len(layers) == 2
    assert all(d.bias is not None for d in layers)
    assert layers[-1].output == "logits"
    assert activation_of(b) in ("Relu", "Tanh", "Sigmoid")


def test_no_boundary_is_clear_error():
    nodes = [helper.make_node("Relu", ["input"], ["y"])]
    g = helper.make_graph(nodes, "nofc", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    with pytest.raises(XferError, match="cannot cut graph 'nofc'"):
        find_boundary(helper.make_model(g))
