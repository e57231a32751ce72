"""What no pass over the test images can beat: reading their bytes once, and the model's arithmetic at peak rate.

The compute floor counts the model's multiply-adds (Conv, ConvTranspose, Gemm,
MatMul and their quantised forms), each at its precision's peak on the cores
this process may use: fp32 at the CPU's real datapath (``xfer.hw``: Zen 4's
AVX-512 runs on 256-bit pipes), int8 at VNNI's or AMX's rate, bf16 at AVX-512
BF16's or AMX's. The binding floor of a pass is the larger of its read floor
and the compute floor of the model it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from xfer.bench.inputs import Gathered, TestSplit
from xfer.bench.stream import WATCH, Stream, StreamPlan, stream_of
from xfer.bench.timing import PathResult, timed
from xfer.graph import InputSpec
from xfer.hw import hardware
from xfer.records import Record

if TYPE_CHECKING:
    import onnx


def floors(model: onnx.ModelProto, split: TestSplit, spec: InputSpec, plan: StreamPlan,
           repeat: int) -> dict[str, PathResult]:
    """The read floor, the kernel alone on the stream, and the model's compute floor, by path name.

    The read floor is the split's bytes read once at the memory's rate. A split over the stream's watch is read by
    pread into per-thread buffers (or re-mapped as the pass goes, its pages released and re-faulted, where the file
    cannot be read by descriptor), which costs more than the reading; then the floor reads as many images from a
    part of the split that stays mapped (its own mapping of the pack, dropped after), and the read as the pass must
    do it is reported beside it (``read_pread`` or ``read_remapped``), not as a floor.
    """
    stream = stream_of(split, spec, plan)
    t_kernel, _ = timed(lambda: stream.each_chunk(partial(stream.preprocess, 0)), repeat)
    out = {"kernel_stream": PathResult.of(t_kernel, split.n), "flop": compute_floor(model, split.n)}
    nbytes = split.n * split.image_bytes
    if stream.resident or not isinstance(split.images, np.memmap) or split.images.filename is None:
        out["read"] = PathResult.of(_read_times(stream, repeat), split.n, bytes=nbytes)
        return out
    out["read_pread" if stream.fd is not None else "read_remapped"] = PathResult.of(
        _read_times(stream, repeat), split.n, bytes=nbytes, releases_per_pass=stream.releases / (repeat + 1))
    own = np.memmap(split.images.filename, split.images.dtype, "r", split.images.offset, split.images.shape)
    part = np.unique(split.order)[: max(1, int(WATCH * plan.release_bytes) // split.image_bytes)]
    kept = Stream(own, part, split.n, spec, plan)
    out["read"] = PathResult.of(_read_times(kept, repeat), split.n, bytes=nbytes, images_kept_mapped=len(part))
    return out


def _read_times(stream: Stream, repeat: int) -> list[float]:
    times, _ = timed(lambda: stream.each_chunk(stream.read), repeat)
    return times


@dataclass(frozen=True)
class Work(Record):
    """One node's multiply-adds per image, and the precision it computes them in."""

    op: str
    name: str
    macs: int
    precision: str  # fp32, int8, bf16


def compute_floor(model: onnx.ModelProto, n: int) -> PathResult:
    """``n`` images' multiply-adds, each at its precision's peak on the cores this process may use.

    A float model is all fp32; a quantised one (QDQ or QOperator) computes its quantised nodes at the int8 rate
    (VNNI, AMX or the two-step AVX2 form, as ``xfer.hw`` reads the CPU) and the rest in fp32.
    """
    hw = hardware()
    work = model_work(model)
    by: dict[str, int] = {}
    for w in work:
        by[w.precision] = by.get(w.precision, 0) + w.macs
    peaks = {p: hw.peak(p) for p in by}
    seconds = sum(2.0 * macs * n / peaks[p].ops_per_s for p, macs in by.items())
    fp32 = hw.peak("fp32")
    return PathResult.estimate(seconds, n, macs_per_image=sum(by.values()), macs_by_precision=by,
                               peak_gflops=fp32.ops_per_s / 1e9, peak_note="; ".join(p.how for p in peaks.values()))


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
    """fp32 FLOP/s of the cores this process may use, at the reported clock and the CPU's real datapath."""
    return hardware().peak_flops()


def model_macs(model: onnx.ModelProto) -> int:
    """Multiply-adds per image in the model's Conv, Gemm and MatMul nodes (float or quantised)."""
    return sum(w.macs for w in model_work(model))


# op -> the position of its weight input, for the nodes whose arithmetic a floor counts
CONV_OPS = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3}
MATMUL_OPS = {"Gemm": 1, "MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3, "QGemm": 3}
INT8_OPS = {"ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul", "QGemm"}


def model_work(model: onnx.ModelProto) -> list[Work]:
    """Each Conv/Gemm/MatMul node's multiply-adds per image (shapes inferred at batch 1) and its precision."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    m = onnx.shape_inference.infer_shapes(m)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
    dtypes = {t.name: t.data_type for t in m.graph.initializer}
    producer = {o: node for node in m.graph.node for o in node.output}
    out = []
    for node in m.graph.node:
        wi = CONV_OPS.get(node.op_type, MATMUL_OPS.get(node.op_type))
        if wi is None or len(node.input) <= wi or node.input[wi] not in shapes or node.output[0] not in shapes:
            continue
        w, y = shapes[node.input[wi]], shapes[node.output[0]]
        if node.op_type in CONV_OPS:
            # Conv: each output element sums Cin/g*kh*kw products; ConvTranspose: each input element feeds Cout/g*kh*kw
            each = y if node.op_type != "ConvTranspose" else shapes.get(node.input[0], [0])
            macs = int(np.prod(each)) * int(np.prod(w[1:]))
        else:
            k = w[1] if node.op_type in ("Gemm", "QGemm") and _trans_b(node) else w[0]
            macs = int(np.prod(y)) * k
        out.append(Work(node.op_type, node.name, macs, _precision(node, wi, producer, dtypes)))
    return out


def _precision(node: onnx.NodeProto, wi: int, producer: dict[str, onnx.NodeProto], dtypes: dict[str, int]) -> str:
    """int8 for quantised operators and QDQ nodes (weights from a DequantizeLinear), bf16 for bf16 weights."""
    import onnx

    if node.op_type in INT8_OPS:
        return "int8"
    src = producer.get(node.input[wi])
    if src is not None and src.op_type == "DequantizeLinear":
        return "int8"
    if dtypes.get(node.input[wi]) == onnx.TensorProto.BFLOAT16 or (
            src is not None and src.op_type == "Cast" and any(a.name == "to" and a.i == onnx.TensorProto.BFLOAT16
                                                              for a in src.attribute)):
        return "bf16"
    return "fp32"


def _trans_b(node: onnx.NodeProto) -> bool:
    return any(a.name == "transB" and a.i for a in node.attribute)


# the gathered path each streamed one is compared with, like for like (same model)
GATHERED_OF = {"stream": "kernel+ort", "stream_int8": "kernel+ort_int8",
               "stream_front": "kernel+ort_front", "stream_front_int8": "kernel+ort_front_int8"}
# the streamed pass of the same model with its convolutions in the kernel
FRONT_OF = {"stream": "stream_front", "stream_int8": "stream_front_int8"}
COMPUTE_FLOOR_OF = {"stream": "flop", "kernel+ort": "flop", "stream_front": "flop", "kernel+ort_front": "flop",
                    "stream_int8": "flop_int8", "kernel+ort_int8": "flop_int8", "stream_front_int8": "flop_int8",
                    "kernel+ort_front_int8": "flop_int8"}


@dataclass
class BindingFloor(Record):
    """Which floor binds xfer's pass (the larger of reading the bytes and computing its model), and how far each
    whole pass is from it."""

    binding: str                 # "read", "flop" or "flop_int8"
    seconds: float
    compute: str                 # the compute floor of the model xfer's path runs
    xfer_vs_floor: float
    paths_vs_floor: dict[str, float]


def binding_floor(paths: dict[str, PathResult], lead: str, end_to_end: list[str]) -> BindingFloor | None:
    """The binding floor of ``lead``'s pass, or None when its floors did not run."""
    compute = COMPUTE_FLOOR_OF.get(lead, "flop")
    have = [k for k in ("read", compute) if k in paths]
    if not have or lead not in paths:
        return None
    b = max(have, key=lambda k: paths[k].median_s)
    t = paths[b].median_s
    return BindingFloor(b, t, compute, paths[lead].median_s / t,
                        {k: paths[k].median_s / t for k in end_to_end if k in paths})
