"""The old, materialised path, timed in the same run: every test image gathered first, then kernel, then ORT.

Kept beside the stream while the gathered copy fits (``MATERIALIZE_LIMIT_BYTES``):
it is what the study timed, and what the baselines read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xfer.bench.front import FrontRunner, FrontSplit
from xfer.bench.inputs import Gathered
from xfer.bench.session import OrtTuning, infer, session, tune_ort
from xfer.bench.timing import PathResult, timed
from xfer.graph import InputSpec
from xfer.preprocess import preprocess, preprocess_to_device

DEFAULT_BATCHES = (256, 1024, 4096)


@dataclass
class GatheredPass:
    """The materialised pass's results and what the baselines reuse: its tuned session and its batch."""

    paths: dict[str, PathResult]
    tuning: OrtTuning
    session: Any
    predictions: np.ndarray


def gathered_pass(model_bytes: bytes, g: Gathered, spec: InputSpec, repeat: int, threads: list[int],
                  batches: list[int] | None) -> GatheredPass:
    """Kernel alone, ORT alone (tuned threads and batch) and the two in turn, on the gathered images."""
    x_u8, y, n = g.images, g.labels, len(g.images)
    x = np.empty((n, spec.channels, *spec.size), np.float32)
    t_pre, _ = timed(lambda: preprocess(x_u8, spec.size, spec.channels, spec.mean, spec.std, out=x), repeat)
    kernel = PathResult.of(t_pre, n)
    tune = tune_ort(model_bytes, x, threads, list(batches or DEFAULT_BATCHES))
    sess = session(model_bytes, tune.threads)
    t_inf, _ = timed(lambda: infer(sess, x, tune.batch), repeat)
    inference = PathResult.of(t_inf, n)

    t_all, pred = _kernel_then_ort(sess, g, spec, tune.batch, x, repeat)
    both = PathResult.of(t_all, n, float((pred == y).mean()), preprocess_s=kernel.median_s, inference_s=inference.median_s)
    return GatheredPass({"kernel": kernel, "ort_inference": inference, "kernel+ort": both}, tune, sess, pred)


def gathered_again(model_bytes: bytes, g: Gathered, spec: InputSpec, tuning: OrtTuning, repeat: int) -> PathResult:
    """The gathered kernel + ORT pass with another model (the int8 one) and the float pass's tuned batch and threads,
    so each streamed pass has a gathered twin to be compared with."""
    x = np.empty((len(g.images), spec.channels, *spec.size), np.float32)
    t_all, pred = _kernel_then_ort(session(model_bytes, tuning.threads), g, spec, tuning.batch, x, repeat)
    return PathResult.of(t_all, len(x), float((pred == g.labels).mean()))


def gathered_front(cut: FrontSplit, g: Gathered, spec: InputSpec, tuning: OrtTuning, repeat: int) -> PathResult:
    """The gathered twin of a streamed pass through the kernel's front: the gathered images straight to features
    (``Front.from_images``, every image at once), then ONNX Runtime runs the head over them in the float pass's
    batches and threads."""
    runner = FrontRunner(cut, spec, 0)
    feats = runner.buffer(len(g.images))
    sess = session(cut.head.SerializeToString(), tuning.threads)

    def front_ort() -> np.ndarray:
        runner(g.images, None, feats)
        return infer(sess, runner.head_input(feats), tuning.batch)

    times, pred = timed(front_ort, repeat)
    return PathResult.of(times, len(feats), float((pred == g.labels).mean()))


def _kernel_then_ort(sess: Any, g: Gathered, spec: InputSpec, batch: int, x: np.ndarray,
                     repeat: int) -> tuple[list[float], np.ndarray]:
    """The gathered pass itself, timed: the kernel into ``x``, then ONNX Runtime over it; times and predictions."""
    def kernel_ort() -> np.ndarray:
        preprocess(g.images, spec.size, spec.channels, spec.mean, spec.std, out=x)
        return infer(sess, x, batch)

    return timed(kernel_ort, repeat)


def gpu_pass(sess: Any, g: Gathered, spec: InputSpec, batch: int, repeat: int, pred_cpu: np.ndarray) -> PathResult:
    """CUDA kernel writes straight into the buffer ONNX Runtime's CUDA EP reads (IO binding).

    ``agrees_with_cpu`` is the share of images whose prediction equals the CPU pass's.
    """
    import onnxruntime as ort

    name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    x_u8, n = g.images, len(g.images)
    buffers: dict[int, Any] = {}  # device input buffers by batch length, allocated once and reused

    def one_pass() -> np.ndarray:
        preds = np.empty(n, np.int64)
        for i in range(0, n, batch):
            chunk = x_u8[i:i + batch]
            shape = (len(chunk), spec.channels, *spec.size)
            if len(chunk) not in buffers:
                buffers[len(chunk)] = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
            buf = buffers[len(chunk)]
            preprocess_to_device(chunk, buf.data_ptr(), int(np.prod(shape)) * 4, spec.size, spec.channels, spec.mean,
                                 spec.std)
            binding = sess.io_binding()
            binding.bind_ortvalue_input(name, buf)
            binding.bind_output(out_name, "cpu")
            sess.run_with_iobinding(binding)
            preds[i:i + batch] = binding.copy_outputs_to_cpu()[0].argmax(1)
        return preds

    times, pred = timed(one_pass, repeat)
    return PathResult.of(times, n, float((pred == g.labels).mean()), agrees_with_cpu=float((pred == pred_cpu).mean()))
