"""The training loop: ``train_one_epoch``, ``evaluate``, metrics and checkpoints.

Shaped like torchvision's reference scripts. Each epoch's shuffle and
augmentation come from a generator seeded by (seed, epoch), so a run resumed
from a checkpoint reaches the same final weights as an unbroken one; under
data parallelism every rank draws the same global batch and keeps its slice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from xfer.augment import Moves, augment
from xfer.errors import XferError
from xfer.importer import logits_of
from xfer.io import atomic_path
from xfer.parallel import Dist, all_sum

CKPT_VERSION = 1
EVAL_BATCH = 1024  # evaluation needs no gradients: large batches


class Criterion(Protocol):
    """What a task's loss gives the loop: per-epoch targets for a batch, and each sample's loss."""

    def targets(self, idx: torch.Tensor, epoch_rng: np.random.Generator) -> torch.Tensor: ...

    def sample_losses(self, out: Any, idx: torch.Tensor, target: torch.Tensor,
                      moves: Moves | None = None) -> torch.Tensor: ...


class Metric(Protocol):
    """An extra evaluation measure a task adds, fed each batch's outputs (rows ``start:stop``)."""

    def update(self, out: Any, start: int, stop: int) -> None: ...

    def result(self) -> dict[str, float]: ...


@dataclass
class EpochStats:
    loss: float
    train_acc: float
    seconds: float


@dataclass
class Evaluation:
    """Accuracy, per-class accuracy, the confusion matrix (rows: true, columns: predicted), the predictions, the
    mean loss, and whatever the task's metric adds (``extra``)."""

    accuracy: float
    per_class: dict[str, float | None]
    confusion: list[list[int]]
    predictions: list[int]
    loss: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def train_one_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: np.ndarray, y: np.ndarray,
                    batch_size: int, epoch: int, seed: int, device: torch.device, criterion: Criterion,
                    do_augment: bool = True, pbar: Any = None, dist: Dist | None = None) -> EpochStats:
    """One pass over the training set; raises ``XferError`` on a non-finite loss.

    Under data parallelism every rank draws the same global batch, the same
    augmentation and the same label draws, then keeps its own 1/world slice of
    it. Each rank's loss is its samples' summed loss over the *global* batch
    size, times the world size, so DDP's gradient average equals the global
    batch mean whatever the slice sizes: N ranks step exactly as one process,
    also for a last batch smaller than the world (a rank with no sample still
    runs forward and backward, contributing zero gradients).
    """
    d = dist or Dist()
    model.train()
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(x), generator=g)
    xt = torch.from_numpy(x)
    total, correct, seen = 0.0, 0.0, 0.0
    t0 = time.time()
    for step, i in enumerate(range(0, len(x), batch_size)):
        idx = order[i:i + batch_size]
        n_global = len(idx)
        xb, moves = xt[idx], None
        if do_augment:
            xb, moves = augment(xb, g)
        target = criterion.targets(idx, np.random.default_rng([seed, epoch, step]))
        if d.enabled:
            mine = slice(d.rank, None, d.world)
            xb, target, idx = xb[mine], target[mine], idx[mine]
            moves = moves.rows(mine) if moves is not None else None
        out = model(xb.to(device))
        logits = logits_of(out)
        losses = criterion.sample_losses(out, idx, target, moves)
        loss = losses.sum() * (d.world / n_global)
        bad = not bool(torch.isfinite(loss))
        if d.enabled:
            bad = all_sum([float(bad)], d)[0] > 0
        if bad:
            raise XferError(f"training diverged: loss is {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                            f"the last good checkpoint is kept (try a lower --lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(losses.detach().sum())
        correct += int((logits.argmax(1).cpu() == torch.from_numpy(y[idx.numpy()])).sum())
        seen += len(idx)
        if pbar is not None:
            pbar.update(1)
            pbar.set_postfix(epoch=epoch + 1, loss=f"{total / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
    total, correct, seen = all_sum([total, correct, seen], d)
    return EpochStats(total / seen, correct / seen, time.time() - t0)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, classes: list[str], device: torch.device,
             batch_size: int = EVAL_BATCH, metric: Metric | None = None) -> Evaluation:
    """Classification metrics over ``x``, plus ``metric``'s when the task adds one."""
    model.eval()
    preds, total = [], 0.0
    for i in range(0, len(x), batch_size):
        out = model(torch.from_numpy(x[i:i + batch_size]).to(device))
        logits = logits_of(out)
        total += float(F.cross_entropy(logits, torch.from_numpy(y[i:i + batch_size]).to(device), reduction="sum"))
        preds.append(logits.argmax(1).cpu().numpy())
        if metric is not None:
            metric.update(out, i, min(i + batch_size, len(x)))
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    ev = metrics(pred, y, classes)
    ev.loss = total / max(len(y), 1)
    ev.extra = metric.result() if metric is not None else {}
    return ev


def metrics(pred: np.ndarray, y: np.ndarray, classes: list[str]) -> Evaluation:
    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = {c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, c in enumerate(classes)}
    return Evaluation(float((pred == y).mean()) if len(y) else 0.0, per_class, cm.tolist(), pred.tolist())


@dataclass
class Checkpoint:
    """A run's state after an epoch: what ``--resume`` needs to continue bit-identically.

    On disk it is ``torch.save`` of the plain dict (tensors and containers only), so it loads with
    ``weights_only=True``; reading it back checks every field, because a checkpoint is an untrusted file.
    """

    fingerprint: dict[str, Any]
    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    history: list[dict[str, float]]
    version: int = CKPT_VERSION

    @classmethod
    def of(cls, state: object, path: Path) -> Checkpoint:
        """``state`` as loaded from ``path``, checked: one ``XferError`` line naming the file and the field."""
        def bad(what: str) -> XferError:
            return XferError(f"{path}: not a valid xfer checkpoint ({what})")

        if not isinstance(state, dict):
            raise bad(f"expected a dict of the run's state, got {type(state).__name__}")
        kinds = {"version": int, "fingerprint": dict, "epoch": int, "model": dict, "optimizer": dict,
                 "scheduler": dict, "history": list}
        for key, kind in kinds.items():
            if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
                raise bad(f"'{key}' missing or not a {kind.__name__}")
        if state["epoch"] < 0:
            raise bad(f"epoch {state['epoch']} < 0")
        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model"].items()):
            raise bad("'model' is not a state_dict of named tensors")
        if not all(isinstance(r, dict) for r in state["history"]):
            raise bad("'history' is not a list of epoch rows")
        return cls(**{k: state[k] for k in kinds})

    def _state(self) -> dict[str, Any]:
        return {"version": self.version, "fingerprint": self.fingerprint, "epoch": self.epoch, "model": self.model,
                "optimizer": self.optimizer, "scheduler": self.scheduler, "history": self.history}


def save_checkpoint(path: Path, ck: Checkpoint) -> None:
    with atomic_path(path) as tmp:
        torch.save(ck._state(), tmp)


def load_checkpoint(path: Path) -> Checkpoint:
    """Checkpoints are untrusted files: tensors and plain containers only (``weights_only=True``), then checked."""
    if path.is_dir():
        raise XferError(f"{path}: a directory where a checkpoint file was expected")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean the same thing here
        first = (str(e).splitlines() or [""])[0][:150]
        raise XferError(f"{path}: not a valid xfer checkpoint ({type(e).__name__}: {first})") from None
    return Checkpoint.of(state, path)
