"""Plain ONNX CNNs in the shapes found in the wild, built with onnx.helper (shared by several test folders)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_cnn(head: str = "gemm", flatten: str = "flatten", act: str = "Relu", pool: str = "MaxPool",
             bn: bool = False, dropout: bool = False, channels: int = 1, size: int = 28, classes: int = 10,
             seed: int = 0) -> onnx.ModelProto:
    """conv(6@5x5, pad 2) -> [BN] -> act -> pool -> conv(16@5x5) -> act -> pool -> flatten -> [dropout] -> FC 32 -> act -> FC classes."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def init(name, shape, scale=0.2):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    t = "input"
    nodes.append(helper.make_node("Conv", [t, init("c1_w", (6, channels, 5, 5)), init("c1_b", (6,))], ["c1"],
                                  kernel_shape=[5, 5], pads=[2, 2, 2, 2]))
    t = "c1"
    if bn:
        inits.append(numpy_helper.from_array(np.abs(rng.standard_normal(6)).astype(np.float32) + 0.5, "bn_var"))
        nodes.append(helper.make_node("BatchNormalization", [t, init("bn_s", (6,)), init("bn_b", (6,)),
                                                             init("bn_m", (6,)), "bn_var"], ["bn"]))
        t = "bn"
    nodes += [helper.make_node(act, [t], ["a1"]), helper.make_node(pool, ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Conv", ["p1", init("c2_w", (16, 6, 5, 5)), init("c2_b", (16,))], ["c2"], kernel_shape=[5, 5]),
              helper.make_node(act, ["c2"], ["a2"]), helper.make_node(pool, ["a2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2])]
    side = ((size // 2) - 4) // 2
    width = 16 * side * side
    if flatten == "flatten":
        nodes.append(helper.make_node("Flatten", ["p2"], ["flat"]))
    else:
        inits.append(numpy_helper.from_array(np.array([0, -1], np.int64), "shape"))
        nodes.append(helper.make_node("Reshape", ["p2", "shape"], ["flat"]))
    t = "flat"
    if dropout:
        nodes.append(helper.make_node("Dropout", [t], ["drop"]))
        t = "drop"

    def dense(x, name, fin, fout, out):
        if head == "gemm":
            nodes.append(helper.make_node("Gemm", [x, init(name + "_w", (fout, fin)), init(name + "_b", (fout,))], [out], transB=1))
        else:
            nodes.append(helper.make_node("MatMul", [x, init(name + "_w", (fin, fout))], [out + "_mm"]))
            nodes.append(helper.make_node("Add", [out + "_mm", init(name + "_b", (fout,))], [out]))

    dense(t, "fc1", width, 32, "f1")
    nodes.append(helper.make_node(act, ["f1"], ["fa1"]))
    dense("fa1", "fc2", 32, classes, "logits")
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", channels, size, size])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


VARIANTS = [
    dict(),
    dict(head="matmul"),
    dict(flatten="reshape"),
    dict(act="Tanh", pool="AveragePool"),
    dict(act="Sigmoid", bn=True, dropout=True),
    dict(head="matmul", flatten="reshape", bn=True, channels=3),
]
