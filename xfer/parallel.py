"""Scale-out: data-parallel training under torchrun, and the test pass sharded over processes.

Training: ``torchrun --nproc_per_node N -m xfer train ...`` starts N ranks; each
takes a 1/N slice of every global batch (the same global batch a single
process would see, augmented identically), DDP averages the gradients (gloo on
CPU, NCCL on GPU), and only rank 0 writes checkpoints, models and metrics.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass

import numpy as np

from xfer.errors import XferError



@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str) -> Dist:
    """Join the process group torchrun describes in the environment (a no-op for a plain run)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch
    import torch.distributed as dist

    from datetime import timedelta

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=collective_timeout()))
    return Dist(rank, world, local)


def collective_timeout() -> float:
    """Seconds any collective may wait for the other ranks before the run fails (``XFER_DIST_TIMEOUT``, 300)."""
    try:
        value = float(os.environ.get("XFER_DIST_TIMEOUT", "300"))
    except ValueError:
        value = -1.0
    if not value > 0:
        raise XferError(f"XFER_DIST_TIMEOUT: expected a positive number of seconds, got '{os.environ['XFER_DIST_TIMEOUT']}'")
    return value


def collective_failed(e: BaseException, d: Dist) -> XferError | None:
    """A clear error for a collective that timed out or lost a peer; None for anything else."""
    text = str(e)
    if d.enabled and any(k in text.lower() for k in ("timed out", "timeout", "connection closed", "connection reset")):
        return XferError(f"rank {d.rank}/{d.world}: waited for the other ranks and gave up "
                         f"({text.splitlines()[0][:160]}); a rank died or hung (XFER_DIST_TIMEOUT={collective_timeout():g} s)")
    return None


def all_sum(values: list[float], d: Dist) -> list[float]:
    if not d.enabled:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def finish(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


_SHARED: dict = {}


def _bench_worker(k: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """One shard of the test pass: own ONNX Runtime session, own kernel threads."""
    from xfer import bench
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


def bench_sharded(args: argparse.Namespace) -> dict:
    """``xfer bench --workers N``: the sharded pass beside the one-process pass, with the scaling between them."""
    from xfer import bench
    from xfer.graph import get_metadata, input_spec, load_model

    model = load_model(args.model)
    meta = get_metadata(model)
    channels, size, mean, std = input_spec(model, args.model)
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
    return {"model": str(args.model), "images": len(y), "data": note, "input_shape": shape, "device": "cpu",
            "device_note": f"{args.workers} worker processes, each with its own ONNX Runtime session and kernel threads",
            "env": bench.environment(), "ort": {"threads": one["threads_per_worker"], "batch": batch, "trials": [],
                                                "version": __import__("onnxruntime").__version__},
            "paths": paths, "ratios": {f"scaling_1_to_{args.workers}": one["median_s"] / many["median_s"]},
            "train_accuracy": meta.get("xfer.test_accuracy")}
