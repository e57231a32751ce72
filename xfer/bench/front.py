"""The convolution front: the Conv(+Relu)/MaxPool chain a LeNet-like model starts with, run by the C++ kernel
image by image with its intermediates in cache; ONNX Runtime runs the rest of the model from the cut.

Why: ONNX Runtime's x86 convolutions block channels by 16 (NCHWc), so LeNet-5's 1 -> 6 and 6 -> 16 channel
convolutions ran at ~35% of the fp32 peak (0.18-0.20 s of a FERG-size pass) while its int8 head ran at 1.15x its
own floor. The kernel's loops vectorise along the row when a layer has few output channels and across channels
when it has 16 or more, so the lanes are full either way. A model whose first node is anything else has no front
and runs in ONNX Runtime whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import TensorProto, helper

from xfer.graph import InputSpec, consumers, initializers, remove_dead
from xfer.preprocess import _C

if TYPE_CHECKING:
    import onnx


# The front is for the small convolutions at a network's start, where ORT's channel blocking wastes lanes; a chain
# past this many multiply-adds per image (VGG's first conv alone is 87 M) is left to ORT's GEMM-based kernels.
FRONT_MAX_MACS = 20_000_000


@dataclass(frozen=True)
class ConvStep:
    """A Conv the kernel runs (stride 1, no dilation, one group), with the Relu after it folded in."""

    weight: np.ndarray  # (co, ci, kh, kw) float32
    bias: np.ndarray    # (co,) float32
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    relu: bool


@dataclass(frozen=True)
class PoolStep:
    """A MaxPool without padding, floor mode."""

    kernel: tuple[int, int]
    strides: tuple[int, int]


@dataclass
class FrontSplit:
    """A model cut in two: the steps the kernel runs, and the rest (``head``, its input the tensor ``cut``)."""

    steps: list[ConvStep | PoolStep]
    cut: str
    flat: bool  # the cut is a Flatten's output: the head takes (N, features), else (N, C, H, W)
    head: onnx.ModelProto

    @property
    def convs(self) -> int:
        return sum(isinstance(s, ConvStep) for s in self.steps)

    def describe(self) -> str:
        parts = [f"conv {s.weight.shape[1]}->{s.weight.shape[0]} {s.weight.shape[2]}x{s.weight.shape[3]}"
                 + (" + relu" if s.relu else "") if isinstance(s, ConvStep) else f"maxpool {s.kernel[0]}x{s.kernel[1]}"
                 for s in self.steps]
        return ", ".join(parts)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _conv_step(node: onnx.NodeProto, inits: Any) -> ConvStep | None:
    """The conv as a step, or None when the kernel's loops do not cover it (strides, dilations, groups, auto_pad,
    weights that are not constants)."""
    a = _attrs(node)
    if len(node.input) < 2 or node.input[1] not in inits or (len(node.input) > 2 and node.input[2] and node.input[2] not in inits):
        return None
    w = np.asarray(inits[node.input[1]])
    if w.ndim != 4 or w.dtype != np.float32:
        return None
    if any(s != 1 for s in a.get("strides", [1, 1])) or any(d != 1 for d in a.get("dilations", [1, 1])):
        return None
    auto_pad = a.get("auto_pad", b"NOTSET")
    if a.get("group", 1) != 1 or (auto_pad not in (b"NOTSET", "NOTSET") and auto_pad not in (b"VALID", "VALID")):
        return None
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or min(pads) < 0:
        return None
    bias = np.asarray(inits[node.input[2]], np.float32) if len(node.input) > 2 and node.input[2] else np.zeros(w.shape[0], np.float32)
    return ConvStep(np.ascontiguousarray(w), np.ascontiguousarray(bias), (pads[0], pads[1], pads[2], pads[3]), False)


def _pool_step(node: onnx.NodeProto) -> PoolStep | None:
    a = _attrs(node)
    k = list(a.get("kernel_shape", []))
    if len(node.output) > 1 and node.output[1] or len(k) != 2:
        return None
    if any(a.get("pads", [0, 0, 0, 0])) or a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])):
        return None
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        return None
    s = list(a.get("strides", [1, 1]))
    return PoolStep((k[0], k[1]), (s[0], s[1]))


def _shape_after(steps: list[ConvStep | PoolStep], c: int, h: int, w: int) -> tuple[int, int, int, int]:
    """(C, H, W) after the steps, and their multiply-adds per image."""
    macs = 0
    for s in steps:
        if isinstance(s, ConvStep):
            co, ci, kh, kw = s.weight.shape
            c, h, w = co, h + s.pads[0] + s.pads[2] - kh + 1, w + s.pads[1] + s.pads[3] - kw + 1
            macs += co * ci * kh * kw * max(h, 0) * max(w, 0)
        else:
            h, w = (h - s.kernel[0]) // s.strides[0] + 1, (w - s.kernel[1]) // s.strides[1] + 1
    return c, h, w, macs


def _head(model: onnx.ModelProto, front: list[int], cut: str, dims: list[Any]) -> onnx.ModelProto:
    """The model without the front's nodes, its input the cut (float32 of ``dims``)."""
    head = type(model)()
    head.CopyFrom(model)
    g = head.graph
    for i in sorted(front, reverse=True):
        del g.node[i]
    inits = {t.name for t in g.initializer}
    kept = [i for i in g.input if i.name in inits]
    del g.input[:]
    g.input.extend([helper.make_tensor_value_info(cut, TensorProto.FLOAT, dims), *kept])
    remove_dead(g)
    return head


def split_front(model: onnx.ModelProto) -> FrontSplit | None:
    """The longest Conv(+Relu)/MaxPool chain from the model's input (and a Flatten right after it), cut off; None
    when the model does not start with a convolution the kernel runs on a static (C, H, W) input."""
    g = model.graph
    inits = initializers(model)
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        return None
    dims = [d.dim_param or d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
        return None
    users, outputs = consumers(g), {o.name for o in g.output}
    index = {id(n): i for i, n in enumerate(g.node)}

    def only_user(t: str) -> onnx.NodeProto | None:
        u = users.get(t, [])
        return u[0] if len(u) == 1 and t not in outputs and u[0].input[0] == t else None

    steps: list[ConvStep | PoolStep] = []
    taken: list[int] = []
    tensor = inputs[0].name
    while (node := only_user(tensor)) is not None:
        if node.op_type == "Conv" and (step := _conv_step(node, inits)) is not None \
                and _shape_after([*steps, step], *dims[1:])[3] <= FRONT_MAX_MACS:
            taken.append(index[id(node)])
            tensor = node.output[0]
            relu = only_user(tensor)
            if relu is not None and relu.op_type == "Relu":
                step, tensor = ConvStep(step.weight, step.bias, step.pads, True), relu.output[0]
                taken.append(index[id(relu)])
            steps.append(step)
        elif node.op_type == "MaxPool" and steps and (pool := _pool_step(node)) is not None:
            steps.append(pool)
            taken.append(index[id(node)])
            tensor = node.output[0]
        else:
            break
    if not any(isinstance(s, ConvStep) for s in steps):
        return None
    c, h, w, _ = _shape_after(steps, *dims[1:])
    if min(c, h, w) < 1:
        return None
    flat = False
    nxt = only_user(tensor)
    if nxt is not None and nxt.op_type == "Flatten" and _attrs(nxt).get("axis", 1) == 1:
        tensor, flat = nxt.output[0], True
        taken.append(index[id(nxt)])
    head_dims = [dims[0], c * h * w] if flat else [dims[0], c, h, w]
    return FrontSplit(steps, tensor, flat, _head(model, taken, tensor, head_dims))


def layers(split: FrontSplit) -> list[tuple[Any, ...]]:
    """The steps as the kernel's ``Front`` takes them."""
    return [("conv", s.weight, s.bias, s.pads, s.relu) if isinstance(s, ConvStep) else ("maxpool", s.kernel, s.strides)
            for s in split.steps]


class FrontRunner:
    """The kernel's Front for one split, fed the pack's images: each is preprocessed and run through the convolutions
    in one call (the next image prefetched meanwhile), so the read overlaps the arithmetic and the preprocessed
    batch is never written; ONNX Runtime reads the features next."""

    def __init__(self, split: FrontSplit, spec: InputSpec, threads: int) -> None:
        self.kernel = _C.Front(int(spec.channels), int(spec.size[0]), int(spec.size[1]), layers(split))
        self.mean, self.std = list(spec.mean), list(spec.std)
        self.threads = threads
        dims = split.head.graph.input[0].type.tensor_type.shape.dim
        self.shape = None if split.flat else tuple(d.dim_value for d in dims[1:])

    def buffer(self, rows: int) -> np.ndarray:
        return np.empty((rows, self.kernel.out_features), np.float32)

    def __call__(self, images: np.ndarray, index: np.ndarray | None, out: np.ndarray) -> np.ndarray:
        """The features of ``images[index]`` (every image when None) into ``out`` (a row of ``buffer`` each)."""
        return self.kernel.from_images(images, self.mean, self.std, index=index, out=out, threads=self.threads)

    def from_file(self, fd: int, offset: int, shape: tuple[int, ...], index: np.ndarray, out: np.ndarray) -> np.ndarray:
        """As ``__call__``, for images of ``shape`` at ``offset`` of the file ``fd``, each picked one read with pread."""
        return self.kernel.from_file(fd, offset, list(shape), index, self.mean, self.std, out=out, threads=self.threads)

    def head_input(self, features: np.ndarray) -> np.ndarray:
        """Features as the head takes them: (N, features) after a Flatten, else (N, C, H, W)."""
        return features if self.shape is None else features.reshape(len(features), *self.shape)
