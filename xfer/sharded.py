"""``xfer bench --workers N``: the test pass sharded over forked processes, beside the one-process pass.

Each worker has its own ONNX Runtime session and kernel threads; the wall time
of a pass is that of the slowest worker. The report says how the pass scales.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from xfer import bench
from xfer.config import BenchConfig

_SHARED: dict = {}


def _bench_worker(k: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """One shard of the test pass: own ONNX Runtime session, own kernel threads."""
    from xfer.preprocess import _C, preprocess

    s = _SHARED
    lo, hi = s["bounds"][k], s["bounds"][k + 1]
    x_u8 = s["images"][lo:hi]
    _C.set_num_threads(s["threads"])
    sess = bench.session(s["model_bytes"], s["threads"])
    x = np.empty((len(x_u8), s["channels"], *s["size"]), np.float32)

    def one():
        preprocess(x_u8, s["size"], s["channels"], s["mean"], s["std"], out=x)
        return bench.infer(sess, x, s["batch"])

    pred = one()  # warm-up
    spans = []
    for _ in range(s["repeat"]):
        s["barrier"].wait()
        t0 = time.perf_counter()
        pred = one()
        spans.append((t0, time.perf_counter()))
    return pred, spans


def run_sharded(model_bytes: bytes, images: np.ndarray, size, channels, mean, std, batch: int, workers: int,
                repeat: int) -> dict:
    """Time the kernel + ONNX Runtime pass split over ``workers`` forked processes (wall time of the slowest)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    cores = os.cpu_count() or 1
    _SHARED.update(model_bytes=model_bytes, images=images, size=tuple(size), channels=channels, mean=mean, std=std,
                   batch=batch, repeat=repeat, threads=max(1, cores // workers), barrier=ctx.Barrier(workers),
                   bounds=np.linspace(0, len(images), workers + 1).astype(int).tolist())
    try:
        with ctx.Pool(workers) as pool:
            results = pool.map(_bench_worker, range(workers))
    finally:
        _SHARED.clear()
    preds = np.concatenate([r[0] for r in results])
    walls = [max(r[1][i][1] for r in results) - min(r[1][i][0] for r in results) for i in range(repeat)]
    med = statistics.median(walls)
    return {"workers": workers, "threads_per_worker": max(1, cores // workers), "median_s": med, "min_s": min(walls),
            "max_s": max(walls), "runs": repeat, "images_per_s": len(images) / med, "predictions": preds}


def bench_sharded(args: BenchConfig) -> dict:
    """``xfer bench --workers N``: the sharded pass beside the one-process pass, with the scaling between them."""
    from xfer.graph import input_spec, load_model
    from xfer.meta import read_meta

    model = load_model(args.model_path)
    meta = read_meta(model)
    channels, size, mean, std = input_spec(model, args.model_path)
    shape = [channels, *size]
    x_u8, y, note = bench.load_test_images(model, args.data, args.images)
    batch = (args.batch or [1024])[0]
    mb = model.SerializeToString()
    one = run_sharded(mb, x_u8, size, channels, mean, std, batch, 1, args.repeat)
    many = run_sharded(mb, x_u8, size, channels, mean, std, batch, args.workers, args.repeat)
    paths = {}
    for key, r in (("kernel+ort", one), (f"kernel+ort x{args.workers}", many)):
        pred = r.pop("predictions")
        paths[key] = r | {"accuracy": float((pred == y).mean())}
    return {"model": str(args.model_path), "images": len(y), "data": note, "input_shape": shape, "device": "cpu",
            "device_note": f"{args.workers} worker processes, each with its own ONNX Runtime session and kernel threads",
            "env": bench.environment(), "ort": {"threads": one["threads_per_worker"], "batch": batch, "trials": [],
                                                "version": __import__("onnxruntime").__version__},
            "paths": paths, "ratios": {f"scaling_1_to_{args.workers}": one["median_s"] / many["median_s"]},
            "xfer": f"kernel+ort x{args.workers}", "xfer_note": "the gathered pass sharded over processes",
            "train_accuracy": meta.test_accuracy}


def main(args: BenchConfig) -> dict:
    """The sharded test pass, reported and saved like ``xfer bench``'s."""
    bench.check_model_path(args.model_path)
    return bench.save_report(bench_sharded(args), args)
