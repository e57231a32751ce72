"""``xfer bench --workers N``: the test pass sharded over forked processes, beside the one-process pass.

Each worker has its own ONNX Runtime session and kernel threads; the wall time
of a pass is that of the slowest worker. The report says how the pass scales.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from xfer.bench.inputs import Gathered, load_test_images
from xfer.bench.report import BenchReport, OrtChoice, environment
from xfer.bench.runner import check_model_path, report_path
from xfer.bench.session import infer, session
from xfer.bench.timing import PathResult, timed
from xfer.config import BenchConfig
from xfer.graph import InputSpec, input_spec, load_model
from xfer.io import write_json
from xfer.meta import read_meta
from xfer.preprocess import preprocess, set_kernel_threads

DEFAULT_BATCH = 1024


@dataclass
class _Job:
    """What every forked worker reads (inherited through fork, never pickled)."""

    model_bytes: bytes
    images: np.ndarray
    spec: InputSpec
    batch: int
    repeat: int
    threads: int
    barrier: Any
    bounds: list[int]


_JOB: list[_Job] = []


def _bench_worker(k: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """One shard of the test pass: own ONNX Runtime session, own kernel threads; (predictions, spans per pass)."""
    job = _JOB[0]
    x_u8 = job.images[job.bounds[k]:job.bounds[k + 1]]
    set_kernel_threads(job.threads)
    sess = session(job.model_bytes, job.threads)
    s = job.spec
    x = np.empty((len(x_u8), s.channels, *s.size), np.float32)

    def one() -> np.ndarray:
        preprocess(x_u8, s.size, s.channels, s.mean, s.std, out=x)
        return infer(sess, x, job.batch)

    spans = []

    def synced() -> np.ndarray:
        job.barrier.wait()
        t0 = time.perf_counter()
        pred = one()
        spans.append((t0, time.perf_counter()))
        return pred

    one()  # warm-up
    _, pred = timed(synced, job.repeat, warmup=0)
    return pred, spans


@dataclass
class ShardedPass:
    workers: int
    threads_per_worker: int
    walls: list[float]
    predictions: np.ndarray

    def result(self, labels: np.ndarray) -> PathResult:
        return PathResult.of(self.walls, len(labels), float((self.predictions == labels).mean()), workers=self.workers,
                             threads_per_worker=self.threads_per_worker)


def run_sharded(model_bytes: bytes, g: Gathered, spec: InputSpec, batch: int, workers: int, repeat: int) -> ShardedPass:
    """Time the kernel + ONNX Runtime pass split over ``workers`` forked processes (wall time of the slowest)."""
    ctx = mp.get_context("fork")
    threads = max(1, (os.cpu_count() or 1) // workers)
    _JOB.append(_Job(model_bytes, g.images, spec, batch, repeat, threads, ctx.Barrier(workers),
                     np.linspace(0, len(g.images), workers + 1).astype(int).tolist()))
    try:
        with ctx.Pool(workers) as pool:
            results = pool.map(_bench_worker, range(workers))
    finally:
        _JOB.clear()
    walls = [max(r[1][i][1] for r in results) - min(r[1][i][0] for r in results) for i in range(repeat)]
    return ShardedPass(workers, threads, walls, np.concatenate([r[0] for r in results]))


def bench_sharded(cfg: BenchConfig) -> BenchReport:
    """The sharded pass beside the one-process pass, with the scaling between them."""
    import onnxruntime

    model = load_model(cfg.model_path)
    spec = input_spec(model, cfg.model_path)
    g = load_test_images(model, cfg.data, cfg.images)
    batch = (cfg.batch or [DEFAULT_BATCH])[0]
    mb = model.SerializeToString()
    one = run_sharded(mb, g, spec, batch, 1, cfg.repeat)
    many = run_sharded(mb, g, spec, batch, cfg.workers, cfg.repeat)
    lead = f"kernel+ort x{cfg.workers}"
    paths = {"kernel+ort": one.result(g.labels), lead: many.result(g.labels)}
    return BenchReport(str(cfg.model_path), len(g.labels), g.note, [spec.channels, *spec.size], "cpu",
                       f"{cfg.workers} worker processes, each with its own ONNX Runtime session and kernel threads",
                       environment(), OrtChoice(one.threads_per_worker, batch, onnxruntime.__version__), paths, lead,
                       "the gathered pass sharded over processes",
                       {f"scaling_1_to_{cfg.workers}": paths["kernel+ort"].median_s / paths[lead].median_s},
                       read_meta(model).test_accuracy)


def main(cfg: BenchConfig) -> BenchReport:
    """The sharded test pass, saved like ``xfer bench``'s."""
    check_model_path(cfg.model_path)
    rep = bench_sharded(cfg)
    write_json(report_path(cfg), rep.to_json())
    return rep
