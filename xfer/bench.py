"""Stage 5: the timed test pass, done right, beside the baselines it replaces.

From the packed uint8 test images (no PNG decode inside the timing): the C++
kernel preprocesses, ONNX Runtime infers, in batches, after a warm-up, repeated.
The same pass runs through OpenCV + ONNX Runtime, through PIL + numpy + PyTorch
eager (batched, and one image at a time as the study timed it), and a plain
copy of the input bytes gives the memory-bandwidth floor.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfer.config import BenchConfig
from xfer.errors import XferError


def _timed(fn: Callable[[], object], repeat: int, warmup: int = 1) -> tuple[list[float], object]:
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def _stats(times: list[float], n: int) -> dict:
    med = statistics.median(times)
    return {"median_s": med, "min_s": min(times), "max_s": max(times), "runs": len(times),
            "images_per_s": n / med if med > 0 else float("inf")}


def session(model_bytes: bytes, threads: int, providers: list[str] | None = None, spinning: bool | None = None):
    """An ONNX Runtime session (ORT_ENABLE_ALL: NCHWc layouts on x86); ``spinning`` sets whether idle threads spin."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(model_bytes, so, providers=providers or ["CPUExecutionProvider"])


def infer(sess, x: np.ndarray, batch: int) -> np.ndarray:
    name = sess.get_inputs()[0].name
    preds = np.empty(len(x), np.int64)
    for i in range(0, len(x), batch):
        preds[i:i + batch] = sess.run(None, {name: x[i:i + batch]})[0].argmax(1)
    return preds


def tune_ort(model_bytes: bytes, x: np.ndarray, threads: list[int], batches: list[int]) -> dict:
    """Pick intra-op threads and batch size by measurement on a slice of the real input."""
    sample = x[: min(len(x), 4096)]
    trials = []
    for t in threads:
        sess = session(model_bytes, t)
        for b in batches:
            times, _ = _timed(lambda sess=sess, b=b: infer(sess, sample, b), repeat=2)
            trials.append({"threads": t, "batch": b, "images_per_s": len(sample) / min(times)})
    best = max(trials, key=lambda r: r["images_per_s"])
    return {"threads": best["threads"], "batch": best["batch"], "trials": trials}


def opencv_preprocess(images: np.ndarray, size: tuple[int, int], channels: int, mean, std) -> np.ndarray:
    """The per-image OpenCV path: colour conversion, INTER_AREA resize, normalise."""
    import cv2

    out = np.empty((len(images), channels, *size), np.float32)
    m = np.asarray(mean, np.float32).reshape(-1, 1, 1)
    s = np.asarray(std, np.float32).reshape(-1, 1, 1)
    for i, im in enumerate(images):
        if channels == 1:
            g = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) if im.shape[2] == 3 else im[:, :, 0]
            r = cv2.resize(g, (size[1], size[0]), interpolation=cv2.INTER_AREA)[None]
        else:
            r = cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
        out[i] = (r.astype(np.float32) * np.float32(1 / 255) - m) / s
    return out


def pil_preprocess_one(im: np.ndarray, size: tuple[int, int], channels: int, mean, std) -> np.ndarray:
    """The naive path for one image: PIL resize and convert, numpy normalise."""
    from PIL import Image

    p = Image.fromarray(im).convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BOX)
    a = np.asarray(p, np.float32) / 255.0
    a = a[None] if channels == 1 else a.transpose(2, 0, 1)
    return (a - np.asarray(mean, np.float32).reshape(-1, 1, 1)) / np.asarray(std, np.float32).reshape(-1, 1, 1)


@dataclass
class TestSplit:
    """The model's test split inside the (memory-mapped) pack, cycled to ``n`` images: indices, never pixels."""

    images: np.ndarray
    order: np.ndarray
    labels: np.ndarray
    n: int
    note: str

    @property
    def index(self) -> np.ndarray:
        return np.resize(self.order, self.n)

    @property
    def image_bytes(self) -> int:
        return int(np.prod(self.images.shape[1:]))


def test_split(model, data: str | None, images: int | None) -> TestSplit:
    """The model's own test split (from its metadata), optionally cycled up to ``images`` images."""
    from xfer.data import ferg
    from xfer.data.pack import load_dataset
    from xfer.data.split import default_data
    from xfer.meta import read_meta

    meta = read_meta(model)
    pack = load_dataset(data or default_data())
    spec = meta.split or "random"
    seed = meta.split_seed or 0
    _, te = ferg.split(spec, pack.labels, pack.groups, pack.group_names, seed)
    note = f"test split {spec} (seed {seed}): {len(te)} images"
    if images and images != len(te):
        note += f", cycled to {images}"
    return TestSplit(pack.images, np.asarray(te, np.int64), np.asarray(pack.labels), images or len(te), note)


def load_test_images(model, data: str | None, images: int | None) -> tuple[np.ndarray, np.ndarray, str]:
    """The test split gathered into memory (the old path; ``xfer.stream`` reads the pack in chunks instead)."""
    return gather(test_split(model, data, images))


def gather(split: TestSplit) -> tuple[np.ndarray, np.ndarray, str]:
    """``split``'s images copied out of the pack, with their labels and its note."""
    index = split.index
    return np.ascontiguousarray(split.images[index]), split.labels[index], split.note


def stream_session(model_bytes: bytes, threads: int, spinning: bool):
    """A CPU session for the streamed pass; whether idle ORT threads spin is chosen by measurement."""
    return session(model_bytes, threads, spinning=spinning)


def stream_candidates(cores: int) -> list[dict]:
    """Schedules to try: overlapped (kernel on one core beside ORT) or in turn (both on every core)."""
    from xfer.stream import StreamPlan

    out = []
    for chunk in (512, 1024):  # ORT's activations grow with the chunk: 2,048 took peak RSS to 0.9 GB, 4,096 to 1.4 GB
        for spinning in (False, True):
            out.append({"plan": StreamPlan(chunk, True, 1), "ort_threads": max(1, cores - 1), "spinning": spinning})
            out.append({"plan": StreamPlan(chunk, False, cores), "ort_threads": cores, "spinning": spinning})
    return out


def _stream(split: TestSplit, spec: tuple, plan, n: int | None = None):
    from xfer.stream import Stream

    size, channels, mean, std = spec
    return Stream(split.images, split.order, n or split.n, size, channels, mean, std, plan)


def tune_stream(model_bytes: bytes, split: TestSplit, spec: tuple, cores: int) -> tuple[dict, list[dict]]:
    """Pick the stream's chunk, schedule and ORT spinning by measurement on up to 8,192 of its images."""
    n = min(split.n, 8192)
    trials = []
    for c in stream_candidates(cores):
        stream = _stream(split, spec, c["plan"], n)
        sess = stream_session(model_bytes, c["ort_threads"], c["spinning"])
        times, _ = _timed(lambda stream=stream, sess=sess: stream.run(sess), repeat=2)
        trials.append(c | {"images_per_s": n / min(times)})
    best = max(trials, key=lambda t: t["images_per_s"])
    return best, [{"chunk": t["plan"].chunk, "overlap": t["plan"].overlap, "kernel_threads": t["plan"].kernel_threads,
                   "ort_threads": t["ort_threads"], "spinning": t["spinning"], "images_per_s": t["images_per_s"]}
                  for t in trials]


def streamed_pass(model_bytes: bytes, split: TestSplit, spec: tuple, choice: dict, repeat: int) -> dict:
    """The timed streamed pass with the chosen schedule: times, accuracy and peak RSS."""
    from xfer.stream import timed_passes

    stream = _stream(split, spec, choice["plan"])
    sess = stream_session(model_bytes, choice["ort_threads"], choice["spinning"])
    times, pred, rss, before = timed_passes(stream, sess, repeat)
    y = split.labels[split.index]
    plan = choice["plan"]
    return _stats(times, split.n) | {"accuracy": float((pred == y).mean()), "peak_rss_mb": rss / 2**20,
                                     "rss_before_mb": before / 2**20,
                                     "chunk": plan.chunk, "overlap": plan.overlap, "kernel_threads": plan.kernel_threads,
                                     "ort_threads": choice["ort_threads"], "spinning": choice["spinning"],
                                     "releases": stream.releases}


def floors(model, split: TestSplit, spec: tuple, plan, repeat: int) -> dict:
    """What no pass over these images can beat: reading their bytes once, and the model's arithmetic at peak FLOP/s."""

    stream = _stream(split, spec, plan)

    def read():
        for a, b in stream.chunks():
            stream.read(a, b)

    t_read, _ = _timed(read, repeat)
    t_kernel, _ = _timed(lambda: [stream.preprocess(0, a, b) for a, b in stream.chunks()], repeat)
    macs = model_macs(model)
    peak, how = peak_flops()
    flop_s = 2.0 * macs * split.n / peak
    return {"read": _stats(t_read, split.n) | {"bytes": split.n * split.image_bytes},
            "kernel_stream": _stats(t_kernel, split.n),
            "flop": {"median_s": flop_s, "min_s": flop_s, "max_s": flop_s, "runs": 0, "images_per_s": split.n / flop_s,
                     "macs_per_image": macs, "peak_gflops": peak / 1e9, "peak_note": how}}


def model_macs(model) -> int:
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


def _trans_b(node) -> bool:
    return any(a.name == "transB" and a.i for a in node.attribute)


def peak_flops() -> tuple[float, str]:
    """fp32 FLOP/s of this process's cores at the reported clock: 2 FMA units x 8 lanes x 2 with AVX2+FMA."""
    from xfer import _C

    mhz, flags = 0.0, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":")[1])
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":")[1].split())
    except (OSError, ValueError):
        pass
    per_cycle = 32 if {"avx2", "fma"} <= flags else 16 if "avx" in flags else 8
    mhz = mhz or 2000.0
    cores = _C.get_num_threads()
    return cores * mhz * 1e6 * per_cycle, f"{cores} cores x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle"


def run(model_path: str | os.PathLike[str], data: str | None = None, images: int | None = None, repeat: int = 5,
        per_image_limit: int = 2000, threads: list[int] | None = None, batches: list[int] | None = None,
        baselines: bool = True, device: str = "auto") -> dict:
    """Time the test pass (streamed, beside the old materialised path and the floors); returns the JSON-able report."""
    import onnxruntime as ort

    from xfer.config import MATERIALIZE_LIMIT_BYTES
    from xfer.graph import input_spec, load_model
    from xfer.meta import read_meta

    model = load_model(model_path)
    channels, size, mean, std = input_spec(model, model_path)
    spec = (size, channels, mean, std)
    split = test_split(model, data, images)
    n, model_bytes = split.n, model.SerializeToString()
    gpu_sess, device_note = _pick_device(model_bytes, device)
    report: dict = {"model": str(model_path), "images": n, "data": split.note, "input_shape": [channels, *size],
                    "device": "cuda" if gpu_sess is not None else "cpu", "device_note": device_note,
                    "env": environment(), "paths": {}}
    paths = report["paths"]
    choice, trials = tune_stream(model_bytes, split, spec, os.cpu_count() or 1)
    paths["stream"] = streamed_pass(model_bytes, split, spec, choice, repeat)
    report["ort"] = {"threads": choice["ort_threads"], "batch": choice["plan"].chunk, "spinning": choice["spinning"],
                     "overlap": choice["plan"].overlap, "trials": trials, "graph_optimization": "ORT_ENABLE_ALL",
                     "version": ort.__version__}
    paths.update(floors(model, split, spec, choice["plan"], repeat))
    report.update(_int8_variant(model_path, split, spec, choice, repeat, paths))
    if n * split.image_bytes <= MATERIALIZE_LIMIT_BYTES:
        x_u8, y, _ = gather(split)
        sess, batch = _materialised(report, model_bytes, x_u8, y, spec, gpu_sess, repeat, threads, batches)
        if baselines:
            paths.update(_baselines(model, sess, batch, x_u8, y, size, channels, mean, std, per_image_limit, repeat))
    else:
        report["materialised_note"] = (f"the old path would gather {n * split.image_bytes / 2**30:.1f} GiB of images "
                                       f"(over {MATERIALIZE_LIMIT_BYTES / 2**30:.0f} GiB): only the stream ran")
    report["ratios"] = ratios(paths, report["xfer"])
    train_acc = read_meta(model).test_accuracy
    report["train_accuracy"] = train_acc
    if train_acc is not None and not images:
        report["accuracy_matches_train"] = abs(paths["stream"]["accuracy"] - float(train_acc)) < 1e-9
    return report


def scaling(model_path: str | os.PathLike[str], data: str | None, sizes: list[int], repeat: int = 1) -> list[dict]:
    """The streamed pass at each of ``sizes`` images (the test split cycled), with one schedule: images/s and peak RSS.

    What must stay flat as the count grows is memory; throughput should too. Each size runs in a fresh process,
    so its peak RSS is what ``xfer bench --images N`` would show, not whatever the calling process already holds.
    """
    import json
    import subprocess
    import sys

    from xfer.graph import input_spec, load_model

    model = load_model(model_path)
    channels, size, mean, std = input_spec(model, model_path)
    first = test_split(model, data, min(sizes))
    choice, _ = tune_stream(model.SerializeToString(), first, (size, channels, mean, std), os.cpu_count() or 1)
    plan = choice["plan"]
    sched = {"chunk": plan.chunk, "overlap": plan.overlap, "kernel_threads": plan.kernel_threads,
             "ort_threads": choice["ort_threads"], "spinning": choice["spinning"]}
    points = []
    for n in sizes:
        args = json.dumps({"model": str(model_path), "data": data, "n": n, "repeat": repeat, "schedule": sched})
        code = "import json, sys; from xfer.bench import scaling_point; print(json.dumps(scaling_point(json.loads(sys.argv[1]))))"
        out = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
        if out.returncode != 0:
            raise XferError(f"{model_path}: the streamed pass at {n:,} images failed "
                            f"({(out.stderr.strip().splitlines() or ['no output'])[-1][:200]})")
        points.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return points


def scaling_point(job: dict) -> dict:
    """One size of ``scaling``, in this (fresh) process."""
    from xfer.graph import input_spec, load_model
    from xfer.stream import StreamPlan

    model = load_model(job["model"])
    channels, size, mean, std = input_spec(model, job["model"])
    split = test_split(model, job["data"], job["n"])
    s = job["schedule"]
    choice = {"plan": StreamPlan(s["chunk"], s["overlap"], s["kernel_threads"]), "ort_threads": s["ort_threads"],
              "spinning": s["spinning"]}
    p = streamed_pass(model.SerializeToString(), split, (size, channels, mean, std), choice, job["repeat"])
    return {"images": split.n, "seconds": p["median_s"], "images_per_s": p["images_per_s"],
            "peak_rss_mb": p["peak_rss_mb"], "accuracy": p["accuracy"], "gb_read": split.n * split.image_bytes / 1e9}


def _int8_variant(model_path, split: TestSplit, spec: tuple, choice: dict, repeat: int, paths: dict) -> dict:
    """Stream ``MODEL.int8.onnx`` (from ``xfer optimize --int8``) too; it leads when it keeps the accuracy."""
    from xfer.config import INT8_TOLERANCE
    from xfer.graph import load_model
    from xfer.optimize import int8_path

    q = int8_path(model_path)
    if not q.is_file():
        return {"xfer": "stream", "xfer_note": f"float model (no {q.name}: `xfer optimize --int8` writes one)"}
    paths["stream_int8"] = streamed_pass(load_model(q).SerializeToString(), split, spec, choice, repeat)
    drop = paths["stream"]["accuracy"] - paths["stream_int8"]["accuracy"]
    if abs(drop) <= INT8_TOLERANCE + 1e-9:
        return {"xfer": "stream_int8", "xfer_note": f"int8 head ({q.name}): accuracy {-drop:+.4f} vs float, "
                                                     f"within {INT8_TOLERANCE:g}"}
    return {"xfer": "stream", "xfer_note": f"float model: {q.name} changes accuracy by {-drop:+.4f} (over {INT8_TOLERANCE:g})"}


def _materialised(report: dict, model_bytes: bytes, x_u8: np.ndarray, y: np.ndarray, spec: tuple, gpu_sess,
                  repeat: int, threads, batches):
    """The old path, timed in the same run: all images gathered first, then the kernel, then ONNX Runtime."""
    from xfer.preprocess import preprocess

    size, channels, mean, std = spec
    paths, n, cores = report["paths"], len(x_u8), os.cpu_count() or 1
    x = np.empty((n, channels, *size), np.float32)
    t_pre, _ = _timed(lambda: preprocess(x_u8, size, channels, mean, std, out=x), repeat)
    paths["kernel"] = _stats(t_pre, n)
    tune = tune_ort(model_bytes, x, threads or sorted({1, 2, cores}), batches or [256, 1024, 4096])
    sess = session(model_bytes, tune["threads"])
    report["ort_materialised"] = {"threads": tune["threads"], "batch": tune["batch"], "trials": tune["trials"]}
    t_inf, _ = _timed(lambda: infer(sess, x, tune["batch"]), repeat)
    paths["ort_inference"] = _stats(t_inf, n)

    def kernel_ort():
        preprocess(x_u8, size, channels, mean, std, out=x)
        return infer(sess, x, tune["batch"])

    t_all, pred = _timed(kernel_ort, repeat)
    paths["kernel+ort"] = _stats(t_all, n) | {"accuracy": float((pred == y).mean()),
                                               "preprocess_s": paths["kernel"]["median_s"],
                                               "inference_s": paths["ort_inference"]["median_s"]}
    if gpu_sess is not None:
        paths["cuda_kernel+ort_cuda"] = _gpu_pass(gpu_sess, x_u8, y, size, channels, mean, std, tune["batch"], repeat,
                                                  pred)
    t_copy = _copy_floor(x_u8, repeat)
    paths["copy"] = _stats(t_copy, n) | {"bytes": int(x_u8.nbytes), "gb_per_s": x_u8.nbytes / statistics.median(t_copy) / 1e9}
    return sess, tune["batch"]


def _baselines(model, sess, batch: int, x_u8, y, size, channels, mean, std, per_image_limit: int,
               repeat: int) -> dict:
    """OpenCV per image (alone and feeding ONNX Runtime), and the naive PIL + PyTorch paths."""
    n = len(x_u8)
    paths = {}
    t_cv, _ = _timed(lambda: opencv_preprocess(x_u8, size, channels, mean, std), repeat)
    paths["opencv"] = _stats(t_cv, n)

    def cv_ort():
        return infer(sess, opencv_preprocess(x_u8, size, channels, mean, std), batch)

    t_cvo, pred = _timed(cv_ort, max(1, repeat // 2))
    paths["opencv+ort"] = _stats(t_cvo, n) | {"accuracy": float((pred == y).mean())}
    paths.update(_naive(model, x_u8, y, size, channels, mean, std, per_image_limit, repeat))
    return paths


def _copy_floor(x: np.ndarray, repeat: int) -> list[float]:
    """Times of a plain copy of the input bytes into memory already touched: the bandwidth floor."""
    dst = np.empty_like(x)
    dst.fill(0)
    return _timed(lambda: np.copyto(dst, x), repeat)[0]


def _naive(model, x_u8, y, size, channels, mean, std, per_image_limit: int, repeat: int) -> dict:
    """PIL + numpy + PyTorch eager: batched (256) over everything, per image over a prefix."""
    import torch

    from xfer.dan import logits_of
    from xfer.importer import to_torch

    torch.set_num_threads(os.cpu_count() or 1)
    net = to_torch(model).eval()
    n = len(x_u8)

    @torch.no_grad()
    def batched():
        preds = []
        for i in range(0, n, 256):
            xb = np.stack([pil_preprocess_one(im, size, channels, mean, std) for im in x_u8[i:i + 256]])
            preds.append(logits_of(net(torch.from_numpy(xb))).argmax(1).numpy())
        return np.concatenate(preds)

    k = min(n, per_image_limit)

    @torch.no_grad()
    def per_image():
        return np.array([int(logits_of(net(torch.from_numpy(pil_preprocess_one(im, size, channels, mean, std)[None]))).argmax())
                         for im in x_u8[:k]])

    t_b, pred_b = _timed(batched, max(1, repeat // 2), warmup=0)
    t_p, pred_p = _timed(per_image, 1, warmup=0)
    per_image_s = t_p[0] * n / k
    return {"naive_batched": _stats(t_b, n) | {"accuracy": float((pred_b == y).mean()), "batch": 256},
            "naive_per_image": {"median_s": per_image_s, "min_s": per_image_s, "max_s": per_image_s, "runs": 1,
                                "images_per_s": n / per_image_s, "measured_images": k,
                                "accuracy": float((pred_p == y[:k]).mean()),
                                "note": f"timed on {k} images, scaled to {n}" if k < n else "timed on all images"}}


def _pick_device(model_bytes: bytes, device: str):
    """(a CUDA session or None, the sentence the report gives for the choice)."""
    import onnxruntime as ort

    from xfer.preprocess import cuda_available

    gpu = "CUDAExecutionProvider" in ort.get_available_providers() and cuda_available()
    if device == "cuda" and not gpu:
        raise XferError("--device cuda: needs onnxruntime-gpu with a CUDA device and xfer._C built with CUDA")
    gpu_sess, why = cuda_session(model_bytes) if gpu and device != "cpu" else (None, None)
    if device == "cuda" and gpu_sess is None:
        raise XferError(f"--device cuda: {why}")
    if gpu_sess is not None:
        return gpu_sess, "CUDA kernel + ONNX Runtime CUDA EP with IO binding"
    return None, "CPU: " + (why or ("no CUDA device or onnxruntime-gpu found" if not gpu else "as asked"))


def cuda_session(model_bytes: bytes):
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


def _gpu_pass(sess, x_u8, y, size, channels, mean, std, batch: int, repeat: int, pred_cpu: np.ndarray) -> dict:
    """CUDA kernel writes straight into the buffer ONNX Runtime's CUDA EP reads (IO binding).

    ``agrees_with_cpu`` is the share of images whose prediction equals the CPU pass's.
    """
    import onnxruntime as ort

    from xfer import _C

    name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    n = len(x_u8)
    buffers: dict[int, object] = {}  # device input buffers by batch length, allocated once and reused

    def one_pass():
        preds = np.empty(n, np.int64)
        for i in range(0, n, batch):
            chunk = x_u8[i:i + batch]
            shape = (len(chunk), channels, *size)
            if len(chunk) not in buffers:
                buffers[len(chunk)] = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, "cuda", 0)
            buf = buffers[len(chunk)]
            _C.preprocess_to_device(chunk, buf.data_ptr(), int(np.prod(shape)) * 4, size, channels, list(mean),
                                    list(std), "area")
            binding = sess.io_binding()
            binding.bind_ortvalue_input(name, buf)
            binding.bind_output(out_name, "cpu")
            sess.run_with_iobinding(binding)
            preds[i:i + batch] = binding.copy_outputs_to_cpu()[0].argmax(1)
        return preds

    times, pred = _timed(one_pass, repeat)
    return _stats(times, n) | {"accuracy": float((pred == y).mean()), "agrees_with_cpu": float((pred == pred_cpu).mean())}


def ratios(paths: dict, xfer: str = "stream") -> dict:
    def r(a: str, b: str) -> float | None:
        if a in paths and b in paths:
            return paths[a]["median_s"] / paths[b]["median_s"]
        return None

    out = {"materialised_vs_xfer_speedup": r("kernel+ort", xfer), "kernel_vs_read_floor_slowdown": r("kernel_stream", "read"),
           "xfer_vs_flop_floor_slowdown": r(xfer, "flop"),
           "kernel_vs_opencv_speedup": r("opencv", "kernel"), "kernel_vs_copy_slowdown": r("kernel", "copy"),
           "end_to_end_vs_opencv_ort": r("opencv+ort", xfer), "end_to_end_vs_naive_batched": r("naive_batched", xfer),
           "end_to_end_vs_naive_per_image": r("naive_per_image", xfer)}
    return {k: v for k, v in out.items() if v is not None}


def environment() -> dict:
    import numpy
    import onnxruntime

    from xfer import _C

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "numpy": numpy.__version__, "onnxruntime": onnxruntime.__version__,
            "kernel_threads": _C.get_num_threads(), "cuda_kernel_built": bool(_C.cuda_available())}


PATH_NAMES = {"read": "read every input byte once (floor)", "flop": "model arithmetic at peak FLOP/s (floor)",
              "kernel_stream": "C++ kernel, streamed from the pack",
              "stream_int8": "streamed kernel + ORT, int8 head", "stream": "streamed kernel + ORT (float)",
              "kernel+ort": "old path: gathered, then kernel, then ORT", "copy": "memory copy of the gathered input",
              "kernel": "C++ kernel on the gathered input", "ort_inference": "ONNX Runtime inference alone",
              "opencv": "OpenCV preprocess (per image)", "cuda_kernel+ort_cuda": "CUDA kernel + ORT CUDA (IO binding)",
              "opencv+ort": "OpenCV + ONNX Runtime", "naive_batched": "PIL + numpy + PyTorch, batch 256",
              "naive_per_image": "PIL + numpy + PyTorch, per image"}
END_TO_END = ("stream", "stream_int8", "kernel+ort", "cuda_kernel+ort_cuda", "opencv+ort", "naive_batched", "naive_per_image")


def print_report(rep: dict) -> None:
    from xfer.report.tables import print_table

    print(f"{rep['model']}: {rep['images']} images ({rep['data']}), input {rep['input_shape']}, device {rep['device']} "
          f"({rep['device_note']})")
    o = rep["ort"]
    print(f"ONNX Runtime {o['version']}: {o['threads']} intra-op thread(s), chunks of {o['batch']}, "
          f"{'overlapped with' if o.get('overlap') else 'in turn with'} the kernel, spinning {'on' if o.get('spinning') else 'off'}"
          + (" (chosen by measurement)" if o.get("trials") else ""))
    print(f"xfer's path: {PATH_NAMES.get(rep['xfer'], rep['xfer'])} -- {rep['xfer_note']}")
    base = rep["paths"][rep["xfer"]]["median_s"]
    rows = []
    for k in list(PATH_NAMES) + [k for k in rep["paths"] if k not in PATH_NAMES]:
        p = rep["paths"].get(k)
        if p is None:
            continue
        acc = f"{p['accuracy']:.4f}" if "accuracy" in p else ""
        rss = f"{p['peak_rss_mb']:,.0f}" if "peak_rss_mb" in p else ""
        rel = f"{p['median_s'] / base:.2f}x" if k in END_TO_END or k not in PATH_NAMES else ""
        rows.append([PATH_NAMES.get(k, k), f"{p['median_s']:.3f}", f"{p['min_s']:.3f}", f"{p['max_s']:.3f}",
                     f"{p['images_per_s']:,.0f}", acc, rss, rel])
    print_table(["path", "median s", "min s", "max s", "images/s", "accuracy", "peak RSS MB", "vs xfer"], rows)
    for k, v in rep["ratios"].items():
        print(f"  {k.replace('_', ' ')}: {v:.2f}x")
    if "materialised_note" in rep:
        print(f"  {rep['materialised_note']}")
    if "accuracy_matches_train" in rep:
        verdict = "matches" if rep["accuracy_matches_train"] else "DIFFERS FROM"
        print(f"  streamed accuracy {rep['paths']['stream']['accuracy']:.4f} {verdict} xfer train's "
              f"{rep['train_accuracy']:.4f}")


def check_model_path(path: str) -> None:
    if not Path(path).is_file():
        raise XferError(f"{path}: model not found (train one with `xfer train --mode frozen`)")


def save_report(rep: dict, cfg: BenchConfig) -> dict:
    """Write the report JSON (default: MODEL.bench.json) and print it as a table."""
    from xfer.io import write_json

    out = Path(cfg.out or Path(cfg.model_path).with_suffix(".bench.json"))
    write_json(out, rep)
    print_report(rep)
    print(f"wrote {out}")
    return rep


def main(cfg: BenchConfig) -> dict:
    """``xfer bench``: the timed test pass in one process (``xfer.sharded`` runs ``--workers N``)."""
    check_model_path(cfg.model_path)
    rep = run(cfg.model_path, cfg.data, cfg.images, cfg.repeat, cfg.per_image_limit, cfg.threads, cfg.batch,
              not cfg.no_baselines, cfg.device)
    return save_report(rep, cfg)
