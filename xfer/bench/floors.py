"""What no pass over the test images can beat: reading their bytes once, and the model's arithmetic at peak FLOP/s.

The FLOP floor counts the model's multiply-adds (Conv, ConvTranspose, Gemm,
MatMul) and divides by this process's fp32 peak at the CPU's real vector
width (``xfer.hw``: 256-bit AVX2 or 512-bit AVX-512, with or without FMA).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from xfer.bench.inputs import Gathered, TestSplit
from xfer.bench.stream import StreamPlan, stream_of
from xfer.bench.timing import PathResult, timed
from xfer.graph import InputSpec
from xfer.hw import hardware

if TYPE_CHECKING:
    import onnx


def floors(model: onnx.ModelProto, split: TestSplit, spec: InputSpec, plan: StreamPlan,
           repeat: int) -> dict[str, PathResult]:
    """The read floor, the kernel alone on the stream, and the FLOP floor, by path name."""
    stream = stream_of(split, spec, plan)

    def read() -> None:
        for a, b in stream.chunks():
            stream.read(a, b)

    t_read, _ = timed(read, repeat)
    t_kernel, _ = timed(lambda: [stream.preprocess(0, a, b) for a, b in stream.chunks()], repeat)
    macs = model_macs(model)
    peak, how = peak_flops()
    flop_s = 2.0 * macs * split.n / peak
    return {"read": PathResult.of(t_read, split.n, bytes=split.n * split.image_bytes),
            "kernel_stream": PathResult.of(t_kernel, split.n),
            "flop": PathResult.estimate(flop_s, split.n, macs_per_image=macs, peak_gflops=peak / 1e9, peak_note=how)}


def copy_floor(gathered: Gathered, repeat: int) -> PathResult:
    """A plain copy of the gathered input bytes into memory already touched: the bandwidth floor."""
    x = gathered.images
    dst = np.empty_like(x)
    dst.fill(0)
    times, _ = timed(lambda: np.copyto(dst, x), repeat)
    p = PathResult.of(times, len(x), bytes=int(x.nbytes))
    p.details["gb_per_s"] = x.nbytes / p.median_s / 1e9
    return p


def peak_flops() -> tuple[float, str]:
    """fp32 FLOP/s of the cores this process may use, at the reported clock and the CPU's vector width."""
    return hardware().peak_flops()


def model_macs(model: onnx.ModelProto) -> int:
    """Multiply-adds per image in the model's Conv, Gemm and MatMul nodes (shapes inferred at batch 1)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    m = onnx.shape_inference.infer_shapes(m)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
    total = 0
    for node in m.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in shapes and node.output[0] in shapes:
            w = shapes[node.input[1]]
            # Conv: each output element sums Cin/g*kh*kw products; ConvTranspose: each input element feeds Cout/g*kh*kw
            each = shapes[node.output[0]] if node.op_type == "Conv" else shapes.get(node.input[0], [0])
            total += int(np.prod(each)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul") and node.input[1] in shapes and node.output[0] in shapes:
            k = shapes[node.input[1]]
            total += int(np.prod(shapes[node.output[0]])) * (k[1] if node.op_type == "Gemm" and _trans_b(node) else k[0])
    return total


def _trans_b(node: onnx.NodeProto) -> bool:
    return any(a.name == "transB" and a.i for a in node.attribute)
