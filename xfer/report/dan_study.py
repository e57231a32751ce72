"""``xfer experiments --study dan``: single- vs multi-task DAN, and the four FER+ label schemes.

Every run trains the DAN network (built as ONNX, trained through the same
import -> train -> write-back path) and is scored on the clean test labels
(the folder's emotion), whatever labels it trained on.
"""

from __future__ import annotations

import time
from pathlib import Path

from xfer import train
from xfer.config import StudyConfig, TrainConfig
from xfer.dan import SCHEMES
from xfer.data.split import default_data
from xfer.io import write_json
from xfer.progress import bar, say
from xfer.report.render import write_dan_report
from xfer.report.results import DanRun, DanSettings, DanStudyResult, DanSummary

VARIANTS = [("single-task", 0.0, "clean"), ("multi-task", None, "clean")] + [(f"scheme:{s}", None, s) for s in SCHEMES]


def _config(args: StudyConfig, seed: int, alpha: float, scheme: str, name: str, out: Path) -> TrainConfig:
    return TrainConfig(model="dan", data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       seed=seed, device=args.device, augment=False, resume=True, name=name, out=str(out),
                       input_size=args.input_size, channels=args.channels, head=args.head, label_scheme=scheme,
                       alpha=alpha, beta=1.0, width=args.width)


def main(args: StudyConfig) -> DanStudyResult:
    args = args.but(data=args.data or str(default_data()))
    root = Path(args.out) / args.name
    out = root / "runs"
    plan = [(v, s) for v in VARIANTS for s in args.seeds]
    runs: list[DanRun] = []
    t0 = time.time()
    say(f"DAN study '{args.name}': {len(plan)} runs ({len(VARIANTS)} variants x seeds {args.seeds}), "
        f"{args.epochs} epochs each -> {root}")
    with bar(len(plan), "dan study", "run", disable=False) as pb:
        for k, ((label, alpha, scheme), seed) in enumerate(plan, start=1):
            a = args.alpha if alpha is None else alpha
            name = f"{label.replace(':', '-')}-s{seed}"
            result = train.train_or_reuse(_config(args, seed, a, scheme, name, out))
            runs.append(DanRun(label, seed, a, scheme, result.test_accuracy, result.landmark_nme, result.history,
                               result.model))
            pb.update(1)
            if pb.disable:
                say(f"  [{k}/{len(plan)}] {label:22s} seed {seed}: accuracy {result.test_accuracy:.4f}"
                    + (f", landmark NME {result.landmark_nme:.4f}" if result.landmark_nme is not None and a > 0 else "")
                    + f"  (ETA {(time.time() - t0) / k * (len(plan) - k):.0f}s)")
    summary = {label: DanSummary.of([r for r in runs if r.variant == label]) for label, _, _ in VARIANTS}
    settings = DanSettings(list(args.seeds), args.epochs, args.alpha, args.width, list(args.input_size), args.data)
    results = DanStudyResult(args.name, settings, summary, runs, time.time() - t0)
    write_json(root / "results.json", results.to_json())
    write_dan_report(results, root)
    return results
