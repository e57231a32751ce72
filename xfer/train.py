"""Stage 4: train a rewritten ONNX graph in PyTorch, then write the weights back into it.

A thin orchestrator over ``xfer.loop`` (``train_one_epoch``, ``evaluate``,
checkpoints) and ``xfer.data.split``: build the graph for the mode, import it,
train with an atomic checkpoint after every epoch, write the trained weights
back into the same ONNX graph. ``resume`` after a kill reaches the same final
weights as an unbroken run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from xfer.config import TrainConfig
from xfer.data.split import Split, default_data, load_split
from xfer.errors import XferError
from xfer.loop import CKPT_VERSION, evaluate, eye_indices, load_checkpoint, save_checkpoint, train_one_epoch
from xfer.parallel import Dist, barrier, collective_failed, finish, init_from_env

__all__ = ["TrainConfig", "build_model", "default_data", "load_split", "main", "train_or_reuse"]

FINGERPRINT = ("mode", "data", "source", "epochs", "batch_size", "lr", "seed", "input_size", "channels", "split",
               "head", "train_all", "augment", "model", "label_scheme", "alpha", "beta", "width", "weight_decay", "val")


def fingerprint(cfg: TrainConfig) -> dict:
    """Every setting that changes the trained weights: a checkpoint resumes only under the same ones."""
    values = {k: getattr(cfg, k) for k in FINGERPRINT} | {"lr": cfg.learning_rate,
                                                          "source": None if cfg.is_dan else cfg.source_path}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if v is not None}


def build_model(cfg: TrainConfig, classes: list[str], n_landmarks: int = 0):
    """The ONNX graph that training fills in: the source rewritten for the mode, or a fresh DAN network."""
    from xfer.graph import load_model
    from xfer.surgery import apply

    if cfg.is_dan:
        from xfer.dan import build_dan

        if n_landmarks == 0:
            raise XferError("--model dan needs landmarks in the data (the synthetic FERG-DB has them; real FERG-DB does not)")
        return build_dan((cfg.channels, *cfg.size), classes, n_landmarks, cfg.width, cfg.seed)
    return apply(cfg.mode, load_model(cfg.source_path), classes, cfg.channels, cfg.size, cfg.head, cfg.train_all,
                 cfg.seed)


def main(cfg: TrainConfig) -> dict:
    d = init_from_env(cfg.device)
    try:
        return _main(cfg, d)
    except RuntimeError as e:
        err = collective_failed(e, d)
        if err is None:
            raise
        raise err from None
    finally:
        finish(d)


@dataclass
class _Run:
    """What one training run holds between its steps."""

    cfg: TrainConfig
    d: Dist
    device: torch.device
    data: Split
    graph: object
    model: torch.nn.Module
    net: torch.nn.Module
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    criterion: object
    test_landmarks: object
    fp: dict
    history: list = field(default_factory=list)

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        out, stem = Path(self.cfg.out), self.cfg.stem
        return out / f"{stem}.ckpt", out / f"{stem}.onnx", out / f"{stem}.metrics.json"


def _check(cfg: TrainConfig, d: Dist) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise XferError("--device cuda: PyTorch sees no CUDA device (this torch build is CPU-only or no GPU is present)")
    if not cfg.is_dan and not Path(cfg.source_path).is_file():
        raise XferError(f"{cfg.source_path}: source model not found (run `xfer pretrain` and `xfer convert` first)")
    return torch.device(f"cuda:{d.local_rank}" if cfg.device == "cuda" else "cpu")


def _setup(cfg: TrainConfig, d: Dist, device: torch.device, data: Split) -> _Run:
    from xfer.dan import TaskLoss
    from xfer.importer import to_torch

    graph = build_model(cfg, data.classes, 0 if data.landmarks is None else data.landmarks.shape[1])
    alpha = cfg.alpha if cfg.is_dan else 0.0
    lm = data.landmarks
    criterion = TaskLoss(data.y_train, None if data.votes is None else data.votes[data.train_index],
                         None if lm is None else lm[data.train_index], cfg.label_scheme, alpha, cfg.beta, eye_indices())
    model = to_torch(graph).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise XferError(f"mode {cfg.mode}: nothing to train (every initializer is frozen)")
    net = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[d.local_rank] if cfg.device == "cuda" else None)
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    test_lm = None if lm is None or not cfg.is_dan else lm[data.test_index]
    return _Run(cfg, d, device, data, graph, model, net, params, optimizer, scheduler, criterion, test_lm,
                fingerprint(cfg))


def _resume(run: _Run) -> int:
    """Load the run's checkpoint when resuming; returns the epoch to start from."""
    ckpt = run.paths[0]
    if not (run.cfg.resume and ckpt.is_file()):
        return 0
    ck = load_checkpoint(ckpt)
    if ck.get("version") != CKPT_VERSION or ck.get("fingerprint") != run.fp:
        raise XferError(f"{ckpt}: checkpoint is from a run with other settings; remove it or drop --resume")
    run.model.load_state_dict(ck["model"])
    run.optimizer.load_state_dict(ck["optimizer"])
    run.scheduler.load_state_dict(ck["scheduler"])
    run.history = list(ck["history"])
    if run.d.main:
        print(f"resuming {run.cfg.stem} from epoch {ck['epoch']} of {run.cfg.epochs}")
    return int(ck["epoch"])


def _epoch_row(run: _Run, row: dict, epoch: int) -> dict:
    data = run.data
    ev = evaluate(run.model, data.x_test, data.y_test, data.classes, run.device, landmarks=run.test_landmarks)
    row |= {"epoch": epoch + 1, "test_acc": ev["accuracy"], "test_loss": ev["loss"],
            "lr": run.optimizer.param_groups[0]["lr"]}
    if "landmark_nme" in ev:
        row["landmark_nme"] = ev["landmark_nme"]
    if data.x_val is not None:
        row["val_acc"] = evaluate(run.model, data.x_val, data.y_val, data.classes, run.device)["accuracy"]
    return row


def _fit(run: _Run, start: int) -> None:
    from xfer.progress import bar

    cfg, d = run.cfg, run.d
    steps = math.ceil(len(run.data.x_train) / cfg.batch_size)
    do_augment = cfg.augment and not cfg.is_dan  # flips and shifts would have to move the landmarks too
    with bar((cfg.epochs - start) * steps, f"train {cfg.stem}", "batch", disable=not d.main) as pb:
        for epoch in range(start, cfg.epochs):
            row = train_one_epoch(run.net, run.optimizer, run.data.x_train, run.data.y_train, cfg.batch_size, epoch,
                                  cfg.seed, run.device, do_augment, pb, d, run.criterion)
            run.scheduler.step()
            run.history.append(_epoch_row(run, row, epoch))
            if d.main:
                save_checkpoint(run.paths[0], {"version": CKPT_VERSION, "fingerprint": run.fp, "epoch": epoch + 1,
                                               "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                                               "scheduler": run.scheduler.state_dict(), "history": run.history})
            barrier(d)


def _write(run: _Run, final: dict, timings: dict) -> dict:
    """Write the trained ONNX model and the metrics JSON (rank 0 only); returns the metrics."""
    from xfer.graph import save_model
    from xfer.importer import write_back
    from xfer.io import write_json
    from xfer.meta import write_meta

    cfg, data, model = run.cfg, run.data, run.model
    _, onnx_path, metrics_path = run.paths
    trained = write_back(model.cpu(), run.graph)
    write_meta(trained, mean=data.mean, std=data.std, dataset=str(cfg.data or "synthetic"), split=cfg.split,
               split_seed=cfg.seed, test_accuracy=final["accuracy"])
    save_model(trained, onnx_path)
    result = {
        "mode": "dan" if cfg.is_dan else cfg.mode, "name": cfg.stem, "label_scheme": cfg.label_scheme,
        "alpha": cfg.alpha if cfg.is_dan else 0.0, "landmark_nme": final.get("landmark_nme"), "model": str(onnx_path),
        "source": None if cfg.is_dan else cfg.source_path, "data": cfg.data, "split": cfg.split, "seed": cfg.seed,
        "epochs": cfg.epochs, "input_shape": [cfg.channels, *cfg.size], "train_size": len(data.y_train),
        "test_size": len(data.y_test), "classes": data.classes, "test_accuracy": final["accuracy"],
        "per_class": final["per_class"], "confusion": final["confusion"], "test_index": data.test_index.tolist(),
        "predictions": final["predictions"], "trainable_params": int(sum(p.numel() for p in run.params)),
        "frozen_params": int(sum(p.numel() for p in model.parameters() if not p.requires_grad)),
        "timings": timings, "history": run.history, "settings": run.fp, "world_size": run.d.world,
        "layout": data.layout, "class_word": data.class_word,
    }
    if data.x_val is not None:
        result |= {"val_accuracy": evaluate(model, data.x_val, data.y_val, data.classes, run.device)["accuracy"],
                   "val_size": len(data.y_val)}
    write_json(metrics_path, result)
    _print_summary(result)
    print(f"wrote {onnx_path}, {metrics_path}")
    return result


def _main(cfg: TrainConfig, d: Dist) -> dict:
    device = _check(cfg, d)
    torch.manual_seed(cfg.seed)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = load_split(cfg.data, cfg.split, cfg.size, cfg.channels, cfg.seed, val=cfg.val)
    t_data = time.time() - t0
    run = _setup(cfg, d, device, data)
    start = _resume(run)
    t0 = time.time()
    _fit(run, start)
    t_train = time.time() - t0
    t0 = time.time()
    final = evaluate(run.model, data.x_test, data.y_test, data.classes, device, landmarks=run.test_landmarks)
    t_eval = time.time() - t0
    if not d.main:
        return {"rank": d.rank}
    return _write(run, final, {"data_s": t_data, "train_s": t_train, "eval_s": t_eval})


def train_or_reuse(cfg: TrainConfig) -> dict:
    """The metrics of a finished run with exactly these settings, or a fresh (quiet) training run.

    What lets a study interrupted halfway resume without redoing finished runs.
    """
    import contextlib
    import io
    import json

    _, model_path, metrics_path = (Path(cfg.out) / f"{cfg.stem}{ext}" for ext in (".ckpt", ".onnx", ".metrics.json"))
    if metrics_path.is_file() and model_path.is_file():
        cached = json.loads(metrics_path.read_text())
        if cached.get("settings") == fingerprint(cfg):
            return cached
    with contextlib.redirect_stdout(io.StringIO()):
        return main(cfg)


def _print_summary(r: dict) -> None:
    from xfer.tables import print_table

    print(f"{r['name']}: test accuracy {r['test_accuracy']:.4f} on {r['test_size']} images "
          f"({r['trainable_params']:,} trainable / {r['frozen_params']:,} frozen parameters, "
          f"{r['timings']['train_s']:.1f}s training)")
    print_table([r.get("class_word", "emotion"), "accuracy"], [[k, "-" if v is None else f"{v:.3f}"] for k, v in r["per_class"].items()])
