"""ONNX Runtime sessions for the timed pass: CPU (tuned by measurement) and CUDA (checked, never assumed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from xfer.bench.timing import timed
from xfer.errors import XferError
from xfer.graph import ort_refusal
from xfer.preprocess import cuda_available
from xfer.records import Record

if TYPE_CHECKING:
    import onnxruntime

TUNE_SAMPLE = 4096  # images a tuning trial runs on


def session(model_bytes: bytes, threads: int, providers: list[str] | None = None,
            spinning: bool | None = None) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session (ORT_ENABLE_ALL: NCHWc layouts on x86); ``spinning`` sets whether idle threads spin."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        return ort.InferenceSession(model_bytes, so, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # ORT refuses the model: one line, not its C++ traceback
        raise ort_refusal(e) from None


def infer(sess: onnxruntime.InferenceSession, x: np.ndarray, batch: int) -> np.ndarray:
    """Predicted classes (argmax of the first output) of ``x`` in batches of ``batch``."""
    name = sess.get_inputs()[0].name
    preds = np.empty(len(x), np.int64)
    for i in range(0, len(x), batch):
        preds[i:i + batch] = sess.run(None, {name: x[i:i + batch]})[0].argmax(1)
    return preds


@dataclass
class OrtTrial(Record):
    threads: int
    batch: int
    images_per_s: float


@dataclass
class OrtTuning(Record):
    """The gathered pass's ONNX Runtime settings, chosen by measurement, and every trial behind the choice."""

    threads: int
    batch: int
    trials: list[OrtTrial] = field(default_factory=list)


def tune_ort(model_bytes: bytes, x: np.ndarray, threads: list[int], batches: list[int]) -> OrtTuning:
    """Pick intra-op threads and batch size by measurement on a slice of the real input."""
    sample = x[: min(len(x), TUNE_SAMPLE)]
    trials = []
    for t in threads:
        sess = session(model_bytes, t)
        for b in batches:
            times, _ = timed(partial(infer, sess, sample, b), repeat=2)
            trials.append(OrtTrial(t, b, len(sample) / min(times)))
    best = max(trials, key=lambda r: r.images_per_s)
    return OrtTuning(best.threads, best.batch, trials)


def cuda_session(model_bytes: bytes) -> tuple[Any, str | None]:
    """An ONNX Runtime session on the CUDA execution provider, or (None, why) when the provider did not load.

    ORT falls back to the CPU silently when the CUDA provider cannot load (a
    missing cuDNN, say); what counts is the session's actual providers.
    """
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(model_bytes, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception as e:  # ORT's own error types for a provider that fails to initialise
        return None, f"ONNX Runtime's CUDA execution provider failed ({str(e).splitlines()[0][:160]})"
    if "CUDAExecutionProvider" not in sess.get_providers():
        return None, (f"ONNX Runtime did not load its CUDA execution provider (loaded: {', '.join(sess.get_providers())}; "
                      "are the CUDA and cuDNN libraries onnxruntime-gpu needs installed?)")
    return sess, None


@dataclass
class DeviceChoice:
    """Where the pass runs: a CUDA session (or None for the CPU) and the sentence the report gives for it."""

    session: Any
    note: str

    @property
    def name(self) -> str:
        return "cuda" if self.session is not None else "cpu"


def pick_device(model_bytes: bytes, device: str) -> DeviceChoice:
    """``auto`` takes CUDA when onnxruntime-gpu, a device and the CUDA kernel are all there; ``cuda`` insists."""
    import onnxruntime as ort

    gpu = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_available()
    if device == "cuda" and not gpu:
        raise XferError("--device cuda: needs onnxruntime-gpu with a CUDA device and xfer._C built with CUDA")
    gpu_sess, why = cuda_session(model_bytes) if gpu and device != "cpu" else (None, None)
    if device == "cuda" and gpu_sess is None:
        raise XferError(f"--device cuda: {why}")
    if gpu_sess is not None:
        return DeviceChoice(gpu_sess, "CUDA kernel + ONNX Runtime CUDA EP with IO binding")
    return DeviceChoice(None, "CPU: " + (why or ("no CUDA device or onnxruntime-gpu found" if not gpu else "as asked")))
