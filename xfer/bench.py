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


def session(model_bytes: bytes, threads: int, providers: list[str] | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
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


def load_test_images(model, data: str | None, images: int | None) -> tuple[np.ndarray, np.ndarray, str]:
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
        te = np.resize(te, images)
        note += f", cycled to {images}"
    return np.ascontiguousarray(pack.images[te]), np.asarray(pack.labels[te]), note


def run(model_path: str | os.PathLike[str], data: str | None = None, images: int | None = None, repeat: int = 5,
        per_image_limit: int = 2000, threads: list[int] | None = None, batches: list[int] | None = None,
        baselines: bool = True, device: str = "auto") -> dict:
    """Time the test pass; returns the JSON-able report."""
    import onnxruntime as ort

    from xfer.graph import input_spec, load_model
    from xfer.meta import read_meta
    from xfer.preprocess import preprocess

    model = load_model(model_path)
    meta = read_meta(model)
    channels, size, mean, std = input_spec(model, model_path)
    shape = [channels, *size]
    x_u8, y, note = load_test_images(model, data, images)
    n = len(x_u8)
    model_bytes = model.SerializeToString()
    gpu_sess, device_note = _pick_device(model_bytes, device)
    use_gpu = gpu_sess is not None
    cores = os.cpu_count() or 1
    report: dict = {"model": str(model_path), "images": n, "data": note, "input_shape": shape,
                    "device": "cuda" if use_gpu else "cpu", "device_note": device_note, "env": environment(),
                    "paths": {}}
    paths = report["paths"]

    x = np.empty((n, channels, *size), np.float32)
    pre = lambda: preprocess(x_u8, size, channels, mean, std, out=x)  # noqa: E731
    t_pre, _ = _timed(pre, repeat)
    paths["kernel"] = _stats(t_pre, n)

    tune = tune_ort(model_bytes, x, threads or sorted({1, 2, cores}), batches or [256, 1024, 4096])
    report["ort"] = {"threads": tune["threads"], "batch": tune["batch"], "trials": tune["trials"],
                     "graph_optimization": "ORT_ENABLE_ALL", "version": ort.__version__}
    sess = session(model_bytes, tune["threads"])
    t_inf, _ = _timed(lambda: infer(sess, x, tune["batch"]), repeat)
    paths["ort_inference"] = _stats(t_inf, n)

    def kernel_ort():
        preprocess(x_u8, size, channels, mean, std, out=x)
        return infer(sess, x, tune["batch"])

    t_all, pred = _timed(kernel_ort, repeat)
    pred_cpu = pred
    paths["kernel+ort"] = _stats(t_all, n) | {"accuracy": float((pred == y).mean()),
                                               "preprocess_s": paths["kernel"]["median_s"],
                                               "inference_s": paths["ort_inference"]["median_s"]}
    if use_gpu:
        paths["cuda_kernel+ort_cuda"] = _gpu_pass(gpu_sess, x_u8, y, size, channels, mean, std, tune["batch"], repeat,
                                                  pred_cpu)

    t_copy = _copy_floor(x_u8, repeat)
    paths["copy"] = _stats(t_copy, n) | {"bytes": int(x_u8.nbytes), "gb_per_s": x_u8.nbytes / statistics.median(t_copy) / 1e9}

    if baselines:
        paths.update(_baselines(model, sess, tune["batch"], x_u8, y, size, channels, mean, std, per_image_limit, repeat))

    report["ratios"] = ratios(paths)
    train_acc = meta.test_accuracy
    report["train_accuracy"] = train_acc
    if train_acc is not None and not images:
        report["accuracy_matches_train"] = abs(paths["kernel+ort"]["accuracy"] - float(train_acc)) < 1e-9
    return report


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


def ratios(paths: dict) -> dict:
    def r(a: str, b: str) -> float | None:
        if a in paths and b in paths:
            return paths[a]["median_s"] / paths[b]["median_s"]
        return None

    out = {"kernel_vs_opencv_speedup": r("opencv", "kernel"), "kernel_vs_copy_slowdown": r("kernel", "copy"),
           "end_to_end_vs_opencv_ort": r("opencv+ort", "kernel+ort"),
           "end_to_end_vs_naive_batched": r("naive_batched", "kernel+ort"),
           "end_to_end_vs_naive_per_image": r("naive_per_image", "kernel+ort")}
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


def print_report(rep: dict) -> None:
    from xfer.report.tables import print_table

    print(f"{rep['model']}: {rep['images']} images ({rep['data']}), input {rep['input_shape']}, device {rep['device']} "
          f"({rep['device_note']})")
    print(f"ONNX Runtime {rep['ort']['version']}: {rep['ort']['threads']} intra-op thread(s), batch {rep['ort']['batch']}"
          + (" (chosen by measurement)" if rep["ort"].get("trials") else ""))
    names = {"copy": "memory copy of the input (floor)", "kernel": "C++ kernel preprocess",
             "opencv": "OpenCV preprocess (per image)", "ort_inference": "ONNX Runtime inference",
             "kernel+ort": "kernel + ONNX Runtime (xfer)", "cuda_kernel+ort_cuda": "CUDA kernel + ORT CUDA (IO binding)",
             "opencv+ort": "OpenCV + ONNX Runtime", "naive_batched": "PIL + numpy + PyTorch, batch 256",
             "naive_per_image": "PIL + numpy + PyTorch, per image"}
    base = rep["paths"]["kernel+ort"]["median_s"]
    rows = []
    extra = {k: k for k in rep["paths"] if k not in names}
    for k, label in (names | extra).items():
        p = rep["paths"].get(k)
        if p is None:
            continue
        acc = f"{p['accuracy']:.4f}" if "accuracy" in p else ""
        rel = f"{p['median_s'] / base:.2f}x" if k in ("kernel+ort", "opencv+ort", "naive_batched", "naive_per_image",
                                                       "cuda_kernel+ort_cuda") or k in extra else ""
        rows.append([label, f"{p['median_s']:.3f}", f"{p['min_s']:.3f}", f"{p['max_s']:.3f}", f"{p['images_per_s']:,.0f}",
                     acc, rel])
    print_table(["path", "median s", "min s", "max s", "images/s", "accuracy", "vs xfer"], rows)
    for k, v in rep["ratios"].items():
        print(f"  {k.replace('_', ' ')}: {v:.2f}x")
    if "accuracy_matches_train" in rep:
        verdict = "matches" if rep["accuracy_matches_train"] else "DIFFERS FROM"
        print(f"  kernel+ORT accuracy {rep['paths']['kernel+ort']['accuracy']:.4f} {verdict} xfer train's "
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
