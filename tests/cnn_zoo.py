"""Plain ONNX CNNs in the shapes found in the wild, built with onnx.helper (shared by several test folders)."""

from __future__ import annotations

import functools

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
    else:  # "reshape": (0, -1); "reshape_const": (-1, width), stale once the input size changes
        target = [0, -1] if flatten == "reshape" else [-1, width]
        inits.append(numpy_helper.from_array(np.array(target, np.int64), "shape"))
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
    dict(head="matmul", flatten="reshape_const"),
]


@functools.cache
def zoo_model(name: str) -> onnx.ModelProto:
    """A model-zoo CNN from the onnx wheel with seeded weights (loaded once per test session)."""
    from xfer.zoo import load_zoo

    return load_zoo(name, seed=0)


def make_nhwc_cnn(size: int = 16, classes: int = 5, seed: int = 0) -> onnx.ModelProto:
    """As TensorFlow converters write it: an NHWC input, a Transpose to NCHW, SAME_UPPER convs, a constant reshape."""
    rng = np.random.default_rng(seed)
    w = lambda name, *shape: numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)
    side = (size + 1) // 2 // 2
    nodes = [
        helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["c1"], ["a1"]),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], kernel_shape=[3, 3], auto_pad="SAME_UPPER"),
        helper.make_node("Relu", ["c2"], ["a2"]),
        helper.make_node("Reshape", ["a2", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fw"], ["mm"]),
        helper.make_node("Add", ["mm", "fb"], ["logits"]),
    ]
    inits = [w("w1", 8, 3, 3, 3), w("b1", 8), w("w2", 12, 8, 3, 3), w("fw", 12 * side * side, classes), w("fb", classes),
             numpy_helper.from_array(np.array([1, 12 * side * side], np.int64), "shape")]
    g = helper.make_graph(nodes, "nhwc", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, size, size, 3])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def export_small_resnet(path, size: int = 16) -> object:
    """A small ResNet built from torch.nn, written by PyTorch's own exporter (dynamic batch, view(x.size(0), -1))."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
            self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

        def forward(self, x):
            return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))

    class SmallResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.blocks = nn.Sequential(Block(8), Block(8))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            x = self.pool(self.blocks(self.stem(x)))
            return self.fc(x.view(x.size(0), -1))

    torch.manual_seed(0)
    net = SmallResNet().eval()
    torch.onnx.export(net, torch.zeros(1, 3, size, size), str(path), dynamo=False, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17)
    return net
