"""The training loop: ``train_one_epoch``, ``evaluate``, metrics and checkpoints.

Shaped like torchvision's reference scripts. Each epoch's shuffle and
augmentation come from a generator seeded by (seed, epoch), so a run resumed
from a checkpoint reaches the same final weights as an unbroken one; under
data parallelism every rank draws the same global batch and keeps its slice.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xfer.errors import XferError
from xfer.parallel import Dist, all_sum

CKPT_VERSION = 1


def augment(x: torch.Tensor, g: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random horizontal flips and shifts of up to ``shift`` pixels (edge-padded)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if shift:
        p = F.pad(x, (shift, shift, shift, shift), mode="replicate")
        dy = torch.randint(0, 2 * shift + 1, (n,), generator=g)
        dx = torch.randint(0, 2 * shift + 1, (n,), generator=g)
        x = torch.stack([p[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return x


def train_one_epoch(model, optimizer, x: np.ndarray, y: np.ndarray, batch_size: int, epoch: int, seed: int,
                    device: torch.device, do_augment: bool = True, pbar=None, dist: Dist | None = None,
                    criterion=None) -> dict:
    """One pass over the training set; raises ``XferError`` on a non-finite loss.

    Under data parallelism every rank draws the same global batch, the same
    augmentation and the same label draws, then keeps its own 1/world slice of
    it. Each rank's loss is its samples' summed loss over the *global* batch
    size, times the world size, so DDP's gradient average equals the global
    batch mean whatever the slice sizes: N ranks step exactly as one process,
    also for a last batch smaller than the world (a rank with no sample still
    runs forward and backward, contributing zero gradients).
    """
    from xfer.dan import TaskLoss, logits_of

    d = dist or Dist()
    criterion = criterion or TaskLoss(y)
    model.train()
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(x), generator=g)
    xt = torch.from_numpy(x)
    total, correct, seen = 0.0, 0, 0
    t0 = time.time()
    for step, i in enumerate(range(0, len(x), batch_size)):
        idx = order[i:i + batch_size]
        n_global = len(idx)
        xb = xt[idx]
        if do_augment:
            xb = augment(xb, g)
        target = criterion.targets(idx, np.random.default_rng([seed, epoch, step]))
        if d.enabled:
            xb, target, idx = xb[d.rank::d.world], target[d.rank::d.world], idx[d.rank::d.world]
        out = model(xb.to(device))
        logits = logits_of(out)
        losses = criterion.sample_losses(out, idx, target)
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
    total, correct, seen = all_sum([total, float(correct), float(seen)], d)
    return {"loss": total / seen, "train_acc": correct / seen, "seconds": time.time() - t0}


@torch.no_grad()
def evaluate(model, x: np.ndarray, y: np.ndarray, classes: list[str], device: torch.device,
             batch_size: int = 1024, landmarks: np.ndarray | None = None) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true, columns: predicted); landmark NME too
    when the model predicts landmarks and ``landmarks`` holds the truth."""
    from xfer.dan import landmark_nme, logits_of

    model.eval()
    preds, total, nme = [], 0.0, []
    for i in range(0, len(x), batch_size):
        out = model(torch.from_numpy(x[i:i + batch_size]).to(device))
        logits = logits_of(out)
        total += float(F.cross_entropy(logits, torch.from_numpy(y[i:i + batch_size]).to(device), reduction="sum"))
        preds.append(logits.argmax(1).cpu().numpy())
        if landmarks is not None and isinstance(out, (tuple, list)):
            true = torch.from_numpy(landmarks[i:i + batch_size])
            nme.append(landmark_nme(out[1].cpu().reshape(true.shape), true, eye_indices()).numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    res = metrics(pred, y, classes) | {"loss": total / max(len(y), 1)}
    if nme:
        res["landmark_nme"] = float(np.concatenate(nme).mean())
    return res


def eye_indices() -> tuple[list[int], list[int]]:
    from xfer.data.sidecars import LANDMARK_NAMES

    return ([i for i, n in enumerate(LANDMARK_NAMES) if n.startswith("eye_l")],
            [i for i, n in enumerate(LANDMARK_NAMES) if n.startswith("eye_r")])


def metrics(pred: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = {c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, c in enumerate(classes)}
    return {"accuracy": float((pred == y).mean()) if len(y) else 0.0, "per_class": per_class,
            "confusion": cm.tolist(), "predictions": pred.tolist()}


def save_checkpoint(path: Path, state: dict) -> None:
    from xfer.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict:
    """Checkpoints are untrusted files: tensors and plain containers only (``weights_only=True``)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors all mean the same thing here
        raise XferError(f"{path}: not a valid xfer checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:150]})") from None
