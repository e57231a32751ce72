"""Stage 4: train a rewritten ONNX graph in PyTorch, then write the weights back into it.

Shaped like torchvision's reference scripts: ``train_one_epoch``, ``evaluate``,
``main(args)``. Every epoch ends with an atomic checkpoint; each epoch's
shuffle and augmentation come from a generator seeded by (seed, epoch), so
``--resume`` after a kill reaches the same final weights as an unbroken run.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from xfer.errors import XferError
from xfer.parallel import Dist, all_sum, barrier, collective_failed, finish, init_from_env

CKPT_VERSION = 1


@dataclass
class Split:
    x_train: np.ndarray  # float32 (N, C, H, W), normalised
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_index: np.ndarray  # positions of the test images in the data set
    classes: list[str]
    mean: list[float]
    std: list[float]
    train_index: np.ndarray | None = None
    votes: np.ndarray | None = None  # (N, C) annotator votes of the whole data set, when present
    landmarks: np.ndarray | None = None  # (N, K, 2) in [0, 1] of the image size, when present
    x_val: np.ndarray | None = None  # a validation part carved from the training split (``--val``)
    y_val: np.ndarray | None = None
    val_index: np.ndarray | None = None


def default_data(progress: bool = True, per_class: int = 150, seed: int = 0) -> Path:
    """The embedded default target: a synthetic FERG-DB, rendered and packed on first use."""
    from xfer.cli import DEFAULT_PACK, DEFAULT_SYNTH
    from xfer.data.pack import is_pack, pack_folder
    from xfer.data.synth import generate

    if is_pack(DEFAULT_PACK):
        return Path(DEFAULT_PACK)
    if not Path(DEFAULT_SYNTH).is_dir():
        print(f"rendering the default synthetic FERG-DB into {DEFAULT_SYNTH} (once)")
        generate(DEFAULT_SYNTH, per_class=per_class, seed=seed, progress=progress)
    return pack_folder(DEFAULT_SYNTH, DEFAULT_PACK, progress=progress)


def tensors(images: np.ndarray, size: tuple[int, int], channels: int, chunk: int = 1024) -> np.ndarray:
    """All images through the C++ kernel into [0, 1] floats, chunk by chunk (packs are memory-mapped)."""
    from xfer.preprocess import preprocess

    out = np.empty((len(images), channels, *size), np.float32)
    for i in range(0, len(images), chunk):
        preprocess(np.ascontiguousarray(images[i:i + chunk]), size, channels, out=out[i:i + chunk])
    return out


def load_split(data: str | None, split: str, size: tuple[int, int], channels: int, seed: int,
               progress: bool = True, val: float = 0.0) -> Split:
    """Load, split and normalise the target data with the training split's own mean and std.

    Matching the source's input statistics (zero mean, unit variance, as MNIST
    normalisation gives the digits) is what lets transferred filters see
    familiar inputs. ``val`` > 0 carves a stratified validation part out of the
    training split: the part hyperparameters are chosen on, so the test split
    is never looked at before the final number.
    """
    from xfer.data import ferg
    from xfer.data.pack import load_dataset

    if not 0.0 <= val < 1.0:
        raise XferError(f"--val: expected a fraction in [0, 1), got {val}")
    pack = load_dataset(data or default_data(progress), progress=progress)
    tr, te = ferg.split(split, pack.labels, pack.groups, pack.group_names, seed)
    va = np.zeros(0, np.int64)
    if val > 0:
        keep, held = ferg.stratified_split(pack.labels[tr], pack.groups[tr], val, seed + 7919)
        if len(held) == 0 or len(keep) == 0:
            raise XferError(f"--val {val}: the training split ({len(tr)} images) is too small to carve a validation part")
        tr, va = tr[keep], tr[held]
    x = tensors(pack.images, size, channels)
    axes = (0, 2, 3)
    mean = x[tr].mean(axis=axes).astype(np.float64)
    std = x[tr].std(axis=axes).astype(np.float64) + 1e-6
    x -= mean.astype(np.float32)[None, :, None, None]
    x /= std.astype(np.float32)[None, :, None, None]
    lm = None
    if pack.landmarks is not None:
        h, w = pack.images.shape[1:3]
        lm = (np.asarray(pack.landmarks, np.float32) / np.array([w, h], np.float32)).astype(np.float32)
    return Split(x[tr], pack.labels[tr], x[te], pack.labels[te], te, list(pack.classes), mean.tolist(), std.tolist(),
                 tr, None if pack.votes is None else np.asarray(pack.votes), lm,
                 x[va] if len(va) else None, pack.labels[va] if len(va) else None, va if len(va) else None)


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
    from xfer.data.synth import LANDMARK_NAMES

    return ([i for i, n in enumerate(LANDMARK_NAMES) if n.startswith("eye_l")],
            [i for i, n in enumerate(LANDMARK_NAMES) if n.startswith("eye_r")])


def metrics(pred: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = {c: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i, c in enumerate(classes)}
    return {"accuracy": float((pred == y).mean()) if len(y) else 0.0, "per_class": per_class,
            "confusion": cm.tolist(), "predictions": pred.tolist()}


def _fingerprint(args: argparse.Namespace) -> dict:
    keys = ("mode", "data", "source", "epochs", "batch_size", "lr", "seed", "input_size", "channels", "split",
            "head", "train_all", "augment", "model", "label_scheme", "alpha", "beta", "width", "weight_decay", "val")
    return {k: (list(v) if isinstance(v, tuple) else v) for k in keys if (v := getattr(args, k, None)) is not None}


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


DEFAULT_EPOCHS = 30
DEFAULT_LR = {"reuse": 3e-3}


def default_lr(mode: str | None) -> float:
    """Reuse trains ~70k fresh weights around frozen digit layers: at 1e-3 it was still under-fitting after
    30 epochs (3-seed mean 0.895); 3e-3 reached it. 1e-3 suits the other modes."""
    return DEFAULT_LR.get(mode or "", 1e-3)


def input_size(args: argparse.Namespace) -> tuple[int, int]:
    from xfer.cli import parse_input_size

    return parse_input_size(args.input_size)


def build_model(args: argparse.Namespace, classes: list[str], n_landmarks: int = 0):
    """The ONNX graph that training fills in: the source rewritten for ``args.mode``, or a fresh DAN network."""
    from xfer.graph import load_model
    from xfer.surgery import apply

    if getattr(args, "model", "lenet") == "dan":
        from xfer.dan import build_dan

        if n_landmarks == 0:
            raise XferError("--model dan needs landmarks in the data (the synthetic FERG-DB has them; real FERG-DB does not)")
        return build_dan((args.channels, *input_size(args)), classes, n_landmarks, args.width, args.seed)
    source = load_model(args.source)
    return apply(args.mode, source, classes, args.channels, input_size(args), tuple(args.head),
                 args.train_all, args.seed)


def main(args: argparse.Namespace) -> dict:
    d = init_from_env(args.device)
    try:
        return _main(args, d)
    except RuntimeError as e:
        err = collective_failed(e, d)
        if err is None:
            raise
        raise err from None
    finally:
        finish(d)


def _main(args: argparse.Namespace, d: Dist) -> dict:
    from xfer.graph import save_model, set_metadata
    from xfer.importer import to_torch, write_back
    from xfer.io import write_json
    from xfer.progress import bar

    if args.device == "cuda" and not torch.cuda.is_available():
        raise XferError("--device cuda: PyTorch sees no CUDA device (this torch build is CPU-only or no GPU is present)")
    device = torch.device(f"cuda:{d.local_rank}" if args.device == "cuda" else "cpu")
    dan = getattr(args, "model", "lenet") == "dan"
    if not dan and args.mode is None:
        raise XferError("--mode is required (scratch, reuse, frozen or finetune) unless --model dan")
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS
    if args.lr is None:
        args.lr = default_lr(None if dan else args.mode)
    if args.source is None and not dan:
        from xfer.cli import DEFAULT_SOURCE

        args.source = DEFAULT_SOURCE
    if not dan and not Path(args.source).is_file():
        raise XferError(f"{args.source}: source model not found (run `xfer pretrain` and `xfer convert` first)")
    size = input_size(args)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or ("dan" if dan else args.mode)
    ckpt_path, onnx_path, metrics_path = out / f"{stem}.ckpt", out / f"{stem}.onnx", out / f"{stem}.metrics.json"

    t_data = time.time()
    data = load_split(args.data, args.split, size, args.channels, args.seed, val=getattr(args, "val", 0.0) or 0.0)
    t_data = time.time() - t_data
    graph = build_model(args, data.classes, 0 if data.landmarks is None else data.landmarks.shape[1])
    from xfer.dan import TaskLoss

    scheme, alpha = getattr(args, "label_scheme", "clean"), getattr(args, "alpha", 0.0) if dan else 0.0
    tr_votes = None if data.votes is None else data.votes[data.train_index]
    tr_lm = None if data.landmarks is None else data.landmarks[data.train_index]
    te_lm = None if data.landmarks is None or not dan else data.landmarks[data.test_index]
    criterion = TaskLoss(data.y_train, tr_votes, tr_lm, scheme, alpha, getattr(args, "beta", 1.0), eye_indices())
    do_augment = args.augment and not dan  # flips and shifts would have to move the landmarks too
    model = to_torch(graph).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    net = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[d.local_rank] if args.device == "cuda" else None)
    if not params:
        raise XferError(f"mode {args.mode}: nothing to train (every initializer is frozen)")
    optimizer = torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    history: list[dict] = []
    start = 0
    fp = _fingerprint(args)
    if args.resume and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        if ck.get("version") != CKPT_VERSION or ck.get("fingerprint") != fp:
            raise XferError(f"{ckpt_path}: checkpoint is from a run with other settings; remove it or drop --resume")
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        history, start = list(ck["history"]), int(ck["epoch"])
        if d.main:
            print(f"resuming {stem} from epoch {start} of {args.epochs}")

    steps = math.ceil(len(data.x_train) / args.batch_size)
    t_train = time.time()
    with bar((args.epochs - start) * steps, f"train {stem}", "batch", disable=not d.main) as pb:
        for epoch in range(start, args.epochs):
            row = train_one_epoch(net, optimizer, data.x_train, data.y_train, args.batch_size, epoch, args.seed,
                                  device, do_augment, pb, d, criterion)
            scheduler.step()
            ev = evaluate(model, data.x_test, data.y_test, data.classes, device, landmarks=te_lm)
            row |= {"epoch": epoch + 1, "test_acc": ev["accuracy"], "test_loss": ev["loss"],
                    "lr": optimizer.param_groups[0]["lr"]}
            if "landmark_nme" in ev:
                row["landmark_nme"] = ev["landmark_nme"]
            if data.x_val is not None:
                row["val_acc"] = evaluate(model, data.x_val, data.y_val, data.classes, device)["accuracy"]
            history.append(row)
            if d.main:
                save_checkpoint(ckpt_path, {"version": CKPT_VERSION, "fingerprint": fp, "epoch": epoch + 1,
                                            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                            "scheduler": scheduler.state_dict(), "history": history})
            barrier(d)
    t_train = time.time() - t_train

    t_eval = time.time()
    final = evaluate(model, data.x_test, data.y_test, data.classes, device, landmarks=te_lm)
    t_eval = time.time() - t_eval
    if not d.main:
        return {"rank": d.rank}
    trained = write_back(model.cpu(), graph)
    set_metadata(trained, {"xfer.mean": data.mean, "xfer.std": data.std, "xfer.dataset": str(args.data or "synthetic"),
                           "xfer.split": args.split, "xfer.test_accuracy": final["accuracy"]})
    save_model(trained, onnx_path)
    result = {
        "mode": "dan" if dan else args.mode, "name": stem, "label_scheme": scheme, "alpha": alpha,
        "landmark_nme": final.get("landmark_nme"), "model": str(onnx_path), "source": str(args.source), "data": args.data,
        "split": args.split, "seed": args.seed, "epochs": args.epochs, "input_shape": [args.channels, *size],
        "train_size": len(data.y_train), "test_size": len(data.y_test), "classes": data.classes,
        "test_accuracy": final["accuracy"], "per_class": final["per_class"], "confusion": final["confusion"],
        "test_index": data.test_index.tolist(), "predictions": final["predictions"],
        "trainable_params": int(sum(p.numel() for p in params)),
        "frozen_params": int(sum(p.numel() for p in model.parameters() if not p.requires_grad)),
        "timings": {"data_s": t_data, "train_s": t_train, "eval_s": t_eval}, "history": history,
        "settings": fp, "world_size": d.world,
    }
    if data.x_val is not None:
        result |= {"val_accuracy": evaluate(model, data.x_val, data.y_val, data.classes, device)["accuracy"],
                   "val_size": len(data.y_val)}
    write_json(metrics_path, result)
    _print_summary(result)
    print(f"wrote {onnx_path}, {metrics_path}")
    return result


def train_or_reuse(args: argparse.Namespace) -> dict:
    """The metrics of a finished run with exactly these settings, or a fresh (quiet) training run.

    What lets a study interrupted halfway resume without redoing finished runs.
    """
    import contextlib
    import io
    import json

    out, stem = Path(args.out), args.name or args.mode
    metrics_path, model_path = out / f"{stem}.metrics.json", out / f"{stem}.onnx"
    if metrics_path.is_file() and model_path.is_file():
        cached = json.loads(metrics_path.read_text())
        if cached.get("settings") == _fingerprint(args):
            return cached
    with contextlib.redirect_stdout(io.StringIO()):
        return main(args)


def _print_summary(r: dict) -> None:
    from xfer.report.tables import print_table

    print(f"{r['name']}: test accuracy {r['test_accuracy']:.4f} on {r['test_size']} images "
          f"({r['trainable_params']:,} trainable / {r['frozen_params']:,} frozen parameters, "
          f"{r['timings']['train_s']:.1f}s training)")
    print_table(["emotion", "accuracy"], [[k, "-" if v is None else f"{v:.3f}"] for k, v in r["per_class"].items()])
