"""``xfer experiments --study dan``: single- vs multi-task DAN, and the four FER+ label schemes.

Every run trains the DAN network (built as ONNX, trained through the same
import -> train -> write-back path) and is scored on the clean test labels
(the folder's emotion), whatever labels it trained on.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from xfer.config import StudyConfig, TrainConfig
from xfer.dan import SCHEMES

VARIANTS = [("single-task", 0.0, "clean"), ("multi-task", None, "clean")] + [(f"scheme:{s}", None, s) for s in SCHEMES]


def _config(args: StudyConfig, seed: int, alpha: float, scheme: str, name: str, out: Path) -> TrainConfig:
    return TrainConfig(model="dan", data=args.data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       seed=seed, device=args.device, augment=False, resume=True, name=name, out=str(out),
                       input_size=args.input_size, channels=args.channels, head=args.head, label_scheme=scheme,
                       alpha=alpha, beta=1.0, width=args.width)


def main(args: StudyConfig) -> dict:
    from xfer import train
    from xfer.data.split import default_data
    from xfer.io import write_json
    from xfer.progress import bar
    from xfer.report.render import write_dan_report

    args = args.but(data=args.data or str(default_data()))
    root = Path(args.out) / args.name
    out = root / "runs"
    plan = [(v, s) for v in VARIANTS for s in args.seeds]
    runs: list[dict[str, Any]] = []
    t0 = time.time()
    print(f"DAN study '{args.name}': {len(plan)} runs ({len(VARIANTS)} variants x seeds {args.seeds}), "
          f"{args.epochs} epochs each -> {root}")
    with bar(len(plan), "dan study", "run", disable=False) as pb:
        for k, ((label, alpha, scheme), seed) in enumerate(plan, start=1):
            a = args.alpha if alpha is None else alpha
            name = f"{label.replace(':', '-')}-s{seed}"
            result = train.train_or_reuse(_config(args, seed, a, scheme, name, out))
            runs.append({"variant": label, "seed": seed, "alpha": a, "scheme": scheme,
                         "test_accuracy": result.test_accuracy, "landmark_nme": result.landmark_nme,
                         "history": result.history, "model": result.model})
            pb.update(1)
            if pb.disable:
                print(f"  [{k}/{len(plan)}] {label:22s} seed {seed}: accuracy {result.test_accuracy:.4f}"
                      + (f", landmark NME {result.landmark_nme:.4f}" if result.landmark_nme is not None and a > 0 else "")
                      + f"  (ETA {(time.time() - t0) / k * (len(plan) - k):.0f}s)", flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for label, _, _ in VARIANTS:
        rs = [r for r in runs if r["variant"] == label]
        accs = [r["test_accuracy"] for r in rs]
        nmes = [r["landmark_nme"] for r in rs if r["landmark_nme"] is not None and r["alpha"] > 0]
        summary[label] = {"n": len(rs), "acc_mean": statistics.mean(accs),
                          "acc_std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
                          "nme_mean": statistics.mean(nmes) if nmes else None,
                          "nme_std": (statistics.pstdev(nmes) if len(nmes) > 1 else 0.0) if nmes else None}
    results = {"name": args.name, "study": "dan", "settings": {"seeds": list(args.seeds), "epochs": args.epochs,
               "alpha": args.alpha, "width": args.width, "input_size": list(args.input_size), "data": args.data},
               "summary": summary, "runs": runs, "wall_s": time.time() - t0}
    write_json(root / "results.json", results)
    html, md = write_dan_report(results, root)
    from xfer.tables import print_table, spread

    print_table(["variant", "accuracy (clean test labels)", "landmark NME"],
                [[k, spread(v["acc_mean"], v["acc_std"], v["n"]),
                  "-" if v["nme_mean"] is None else spread(v["nme_mean"], v["nme_std"], v["n"], 4)] for k, v in summary.items()])
    print(f"wrote {root / 'results.json'}, {md}, {html}")
    return results
