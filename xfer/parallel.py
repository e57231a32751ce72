"""Data-parallel training under torchrun: process group, collectives with a timeout, clear failures.

Training: ``torchrun --nproc_per_node N -m xfer train ...`` starts N ranks; each
takes a 1/N slice of every global batch (the same global batch a single
process would see, augmented identically), DDP averages the gradients (gloo on
CPU, NCCL on GPU), and only rank 0 writes checkpoints, models and metrics.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

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
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, timeout=timedelta(seconds=collective_timeout()))
        except (RuntimeError, ValueError) as e:
            hint = " (on several hosts, set GLOO_SOCKET_IFNAME to the interface the hosts share)" if backend == "gloo" else ""
            raise XferError(f"rank {rank}/{world}: cannot join the other ranks: {str(e).splitlines()[0][:200]}{hint}") from None
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
    first = text.splitlines()[0].split(". ")[0][:160] if text.strip() else type(e).__name__
    if d.enabled and any(k in text.lower() for k in ("timed out", "timeout", "connection closed", "connection reset")):
        return XferError(f"rank {d.rank}/{d.world}: waited for the other ranks and gave up "
                         f"({first}); a rank died or hung (XFER_DIST_TIMEOUT={collective_timeout():g} s)")
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


def finish(d: Dist, ok: bool = True) -> None:
    """Leave the process group: after a clean run, wait for every rank; after a failure, leave at once (a barrier
    with a dead peer would replace the run's one-line error with its own)."""
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            try:
                if ok:
                    dist.barrier()
            finally:
                with contextlib.suppress(Exception):
                    dist.destroy_process_group()
