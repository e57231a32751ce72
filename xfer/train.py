"""Stage 4: train a rewritten ONNX graph in PyTorch, then write the weights back into it.

A thin orchestrator over ``xfer.loop`` (``train_one_epoch``, ``evaluate``,
checkpoints), ``xfer.data.split`` and the run's ``Task`` (``xfer.tasks``):
build the graph, import it, train with an atomic checkpoint after every
epoch, write the trained weights back into the same ONNX graph. ``resume``
after a kill reaches the same final weights as an unbroken run. Returns a
``TrainResult`` (saved as ``NAME.metrics.json``).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xfer import progress
from xfer.config import TrainConfig
from xfer.dan import TaskLoss
from xfer.data.sidecars import ibug_to_synthetic
from xfer.data.split import Split, load_split
from xfer.errors import XferError
from xfer.graph import save_model
from xfer.importer import to_torch, write_back
from xfer.io import exclusive, remove_stale_temps, sha256_of, write_json
from xfer.loop import CKPT_VERSION, Checkpoint, Evaluation, evaluate, load_checkpoint, save_checkpoint, train_one_epoch
from xfer.meta import write_meta
from xfer.parallel import Dist, barrier, collective_failed, finish, init_from_env
from xfer.records import JSONObject, Record
from xfer.tasks import Task, task_of

__all__ = ["TrainConfig", "TrainResult", "main", "train_or_reuse"]

FINGERPRINT = ("mode", "data", "source", "epochs", "batch_size", "lr", "seed", "input_size", "channels", "split",
               "head", "train_all", "augment", "model", "label_scheme", "alpha", "beta", "width", "weight_decay", "val",
               "stages", "schedule", "landmarks")


def fingerprint(cfg: TrainConfig) -> JSONObject:
    """Every setting that changes the trained weights: a checkpoint resumes only under the same ones."""
    values = {k: getattr(cfg, k) for k in FINGERPRINT} | {"lr": cfg.learning_rate, "source": task_of(cfg).source(cfg)}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if v is not None}


@dataclass
class Timings(Record):
    data_s: float
    train_s: float
    eval_s: float


@dataclass
class TrainResult(Record):
    """One finished training run (``NAME.metrics.json``): the model written, its test scores, how it was made."""

    mode: str
    name: str
    label_scheme: str
    alpha: float
    landmark_nme: float | None
    model: str
    source: str | None
    data: str | None
    split: str
    seed: int
    epochs: int
    input_shape: list[int]
    train_size: int
    test_size: int
    classes: list[str]
    test_accuracy: float
    per_class: dict[str, float | None]
    confusion: list[list[int]]
    test_index: list[int]
    predictions: list[int]
    trainable_params: int
    frozen_params: int
    timings: Timings
    history: list[dict[str, float]]
    settings: dict[str, Any]
    world_size: int
    layout: str
    class_word: str
    val_accuracy: float | None = None
    val_size: int | None = None
    model_sha256: str | None = None  # the model file this record describes: a reader never pairs it with another


@dataclass
class _Run:
    """What one training run holds between its steps."""

    cfg: TrainConfig
    task: Task
    d: Dist
    device: torch.device
    data: Split
    graph: Any  # onnx.ModelProto
    model: torch.nn.Module
    net: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    fp: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        """(checkpoint, trained model, metrics JSON)."""
        return (Path(self.cfg.out) / f"{self.cfg.stem}.ckpt", *paths_of(self.cfg))

    def evaluate_test(self) -> Evaluation:
        return evaluate(self.model, self.data.x_test, self.data.y_test, self.data.classes, self.device,
                        metric=self.task.metric(self.data))


def main(cfg: TrainConfig) -> TrainResult | None:
    """``xfer train``; under torchrun every rank trains, rank 0 writes and returns the result (others None)."""
    d = init_from_env(cfg.device)
    ok = False
    try:
        result = _main(cfg, d)
        ok = True
        return result
    except RuntimeError as e:
        err = collective_failed(e, d)
        if err is None:
            raise
        raise err from None
    finally:
        finish(d, ok)


def _device(cfg: TrainConfig, d: Dist) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise XferError("--device cuda: PyTorch sees no CUDA device (this torch build is CPU-only or no GPU is present)")
    return torch.device(f"cuda:{d.local_rank}" if cfg.device == "cuda" else "cpu")


def _setup(cfg: TrainConfig, task: Task, d: Dist, device: torch.device, data: Split) -> _Run:
    graph = task.build(cfg, data)
    model = to_torch(graph).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise XferError(f"mode {cfg.mode}: nothing to train (every initializer is frozen)")
    net: torch.nn.Module = model
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[d.local_rank] if cfg.device == "cuda" else None)
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return _Run(cfg, task, d, device, data, graph, model, net, params, optimizer, scheduler, fingerprint(cfg))


def _resume(run: _Run) -> int:
    """Load the run's checkpoint when resuming; returns the epoch to start from."""
    ckpt = run.paths[0]
    for path in run.paths:  # refused now, not after the first epoch when the first write would fail
        if path.is_dir():
            raise XferError(f"{path}: a directory where xfer train writes a file; remove it or pick another --out/--name")
    if not (run.cfg.resume and ckpt.is_file()):
        return 0
    ck = load_checkpoint(ckpt)
    if ck.version != CKPT_VERSION or ck.fingerprint != run.fp:
        raise XferError(f"{ckpt}: checkpoint is from a run with other settings; remove it or drop --resume")
    if ck.epoch > run.cfg.epochs:
        raise XferError(f"{ckpt}: checkpoint is at epoch {ck.epoch}, past the run's {run.cfg.epochs}")
    try:
        run.model.load_state_dict(ck.model)
        run.optimizer.load_state_dict(ck.optimizer)
        run.scheduler.load_state_dict(ck.scheduler)
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        first = (str(e).splitlines() or [""])[0][:150]
        raise XferError(f"{ckpt}: checkpoint does not fit this run's model ({type(e).__name__}: {first})") from None
    run.history = list(ck.history)
    if run.d.main:
        progress.say(f"resuming {run.cfg.stem} from epoch {ck.epoch} of {run.cfg.epochs}")
    return ck.epoch


def _epoch_row(run: _Run, stats: dict[str, float], epoch: int) -> dict[str, float]:
    data = run.data
    ev = run.evaluate_test()
    row = stats | {"epoch": epoch + 1, "test_acc": ev.accuracy, "test_loss": ev.loss,
                   "lr": run.optimizer.param_groups[0]["lr"]} | ev.extra
    if data.x_val is not None and data.y_val is not None:
        row["val_acc"] = evaluate(run.model, data.x_val, data.y_val, data.classes, run.device).accuracy
    return row


def map_landmarks(data: Split, count: int | None) -> Split:
    """The split with its landmarks in the ``count``-point scheme (iBUG's 68 as the synthetic 26), so a DAN trained
    on one scheme can start another's training (``--source``)."""
    if count is None or data.landmarks is None or data.landmarks.shape[1] == count:
        return data
    if data.landmarks.shape[1] != 68:
        raise XferError(f"--landmarks {count}: the data has {data.landmarks.shape[1]} points per face; the known mapping "
                        "is from iBUG's 68")
    return replace(data, landmarks=ibug_to_synthetic(data.landmarks).astype(np.float32))


def stage_of_epoch(cfg: TrainConfig, epoch: int) -> int | None:
    """The DAN stage a stagewise run trains at ``epoch`` (the epochs split evenly, in order), or None (joint)."""
    if cfg.model != "dan" or cfg.schedule != "stagewise":
        return None
    return min(cfg.stages, epoch * cfg.stages // cfg.epochs + 1)


STAGE_PARAM = re.compile(r"_stage(\d+)_")


def _enter_stage(run: _Run, criterion: TaskLoss, epoch: int) -> None:
    """Stagewise DAN: only the stage being trained (and, with the last, the emotion head) takes gradients."""
    t = stage_of_epoch(run.cfg, epoch)
    criterion.stage = t
    if t is None:
        return
    trainable = {id(p) for p in run.params}
    for name, p in run.model.named_parameters():
        if id(p) in trainable:
            m = STAGE_PARAM.search(name)
            p.requires_grad_(int(m.group(1)) == t if m else t == run.cfg.stages)


def _fit(run: _Run, start: int) -> None:
    cfg, d = run.cfg, run.d
    steps = math.ceil(len(run.data.x_train) / cfg.batch_size)
    criterion = run.task.criterion(cfg, run.data)
    if stage_of_epoch(cfg, 0) is not None and d.enabled:
        raise XferError("--schedule stagewise runs in one process (its frozen stages change between epochs, which "
                        "DistributedDataParallel does not allow); use --schedule joint under torchrun")
    with progress.bar((cfg.epochs - start) * steps, f"train {cfg.stem}", "batch", disable=not d.main) as pb:
        for epoch in range(start, cfg.epochs):
            _enter_stage(run, criterion, epoch)
            stats = train_one_epoch(run.net, run.optimizer, run.data.x_train, run.data.y_train, cfg.batch_size, epoch,
                                    cfg.seed, run.device, criterion, run.task.augments(cfg), pb, d)
            run.scheduler.step()
            run.history.append(_epoch_row(run, asdict(stats), epoch))
            if d.main:
                save_checkpoint(run.paths[0], Checkpoint(run.fp, epoch + 1, run.model.state_dict(),
                                                         run.optimizer.state_dict(), run.scheduler.state_dict(),
                                                         run.history))
            barrier(d)
    for p in run.params:  # a stagewise run leaves every weight it trained trainable again
        p.requires_grad_(True)


def _write(run: _Run, final: Evaluation, timings: Timings) -> TrainResult:
    """Write the trained ONNX model and the metrics JSON (rank 0 only)."""
    cfg, data, model, task = run.cfg, run.data, run.model, run.task
    _, onnx_path, metrics_path = run.paths
    trained = write_back(model.cpu(), run.graph)  # type: ignore[arg-type]
    write_meta(trained, mean=data.mean, std=data.std, dataset=str(cfg.data or "synthetic"), split=cfg.split,
               split_seed=cfg.seed, test_accuracy=final.accuracy)
    save_model(trained, onnx_path)
    result = TrainResult(
        cfg.mode_name, cfg.stem, cfg.label_scheme, task.alpha(cfg), final.extra.get("landmark_nme"), str(onnx_path),
        task.source(cfg), cfg.data, cfg.split, cfg.seed, cfg.epochs, [cfg.channels, *cfg.size], len(data.y_train),
        len(data.y_test), data.classes, final.accuracy, final.per_class, final.confusion, data.test_index.tolist(),
        final.predictions, int(sum(p.numel() for p in run.params)),
        int(sum(p.numel() for p in model.parameters() if not p.requires_grad)), timings, run.history, run.fp,
        run.d.world, data.layout, data.class_word)
    if data.x_val is not None and data.y_val is not None:
        result.val_accuracy = evaluate(model, data.x_val, data.y_val, data.classes, run.device).accuracy
        result.val_size = len(data.y_val)
    result.model_sha256 = sha256_of(onnx_path)
    write_json(metrics_path, result.to_json())
    return result


def _main(cfg: TrainConfig, d: Dist) -> TrainResult | None:
    task = task_of(cfg)
    task.check(cfg)
    device = _device(cfg, d)
    torch.manual_seed(cfg.seed)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    if not d.main:
        return _run(cfg, task, d, device)
    with exclusive(Path(cfg.out) / f".{cfg.stem}.lock", f"{Path(cfg.out) / cfg.stem}"):
        remove_stale_temps(Path(cfg.out), [p.name for p in (Path(cfg.out) / f"{cfg.stem}.ckpt", *paths_of(cfg))])
        return _run(cfg, task, d, device)


def _run(cfg: TrainConfig, task: Task, d: Dist, device: torch.device) -> TrainResult | None:
    t0 = time.time()
    data = map_landmarks(load_split(cfg.data, cfg.split, cfg.size, cfg.channels, cfg.seed, val=cfg.val), cfg.landmarks)
    t_data = time.time() - t0
    run = _setup(cfg, task, d, device, data)
    start = _resume(run)
    t0 = time.time()
    _fit(run, start)
    t_train = time.time() - t0
    t0 = time.time()
    final = run.evaluate_test()
    t_eval = time.time() - t0
    if not d.main:
        return None
    return _write(run, final, Timings(t_data, t_train, t_eval))


def paths_of(cfg: TrainConfig) -> tuple[Path, Path]:
    """(the trained model, its metrics JSON) a run with ``cfg`` writes."""
    return Path(cfg.out) / f"{cfg.stem}.onnx", Path(cfg.out) / f"{cfg.stem}.metrics.json"


def train_or_reuse(cfg: TrainConfig) -> TrainResult:
    """The result of a finished run with exactly these settings, or a fresh (quiet) training run.

    What lets a study interrupted halfway resume without redoing finished runs.
    """
    model_path, metrics_path = paths_of(cfg)
    if metrics_path.is_file() and model_path.is_file():
        try:
            cached = json.loads(metrics_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            cached = {}  # a damaged record is retrained, not trusted
        if (isinstance(cached, dict) and cached.get("settings") == fingerprint(cfg)
                and cached.get("model_sha256") == sha256_of(model_path)):
            return TrainResult.from_json(cached)
    with progress.quiet():
        result = main(cfg)
    assert result is not None, "a run outside torchrun is rank 0"
    return result
